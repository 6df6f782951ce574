//! `evomerge evolve` with a `dfs:` section, end to end on the tiny merge fixtures: a data-flow search
//! beats the first model's own path, a PS+DFS search runs both phases in one directory and resumes
//! after SIGKILL in either phase to the records of an uninterrupted run, the exported `evomistral`
//! reloads with the fitness its trial recorded, and bad data-flow recipes are refused up front.

mod evolve_support;

use std::path::{Path, PathBuf};

use evolve_support::*;

/// A data-flow recipe over (ft2, ft1) scored by the likelihood of ft1's continuations (so ft1's
/// layers should pay), the task file copied `repeat` times over.
fn dfs_recipe(dir: &Path, repeat: usize, edit: impl Fn(String) -> String) -> PathBuf {
    let m = fixtures().join("merge/models");
    let text = format!(
        "dfs:
  models: [{m}/ft2, {m}/ft1]
  repeats: 2
  dtype: float32
{task}optimizer: {{max_trials: 40, seed: 0}}
final_eval:
  - {{kind: custom, data: task.jsonl, metric: loglik, generation: {{batch_size: 8}}}}
",
        m = m.display(),
        task = tiny_task(dir, repeat)
    );
    let path = dir.join("recipe.yml");
    std::fs::write(&path, edit(text)).unwrap();
    path
}

/// PS (DARE-TIES of ft1 and ft2 on base) then DFS over (the PS result, ft1).
fn ps_dfs_recipe(dir: &Path, repeat: usize) -> PathBuf {
    let m = fixtures().join("merge/models");
    dfs_recipe(dir, repeat, |t| {
        t.replace(
            "dfs:\n",
            &format!("{}dfs:\n  max_trials: 12\n", tiny_genome()),
        )
        .replace(&format!("{}/ft2, {}/ft1]", m.display(), m.display()), &format!("ps, {}/ft1]", m.display()))
        .replace("max_trials: 40", "max_trials: 8")
    })
}

fn run(recipe: &Path, out: &Path) -> String {
    let o = evomerge(&["evolve", recipe.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn dfs_search_beats_the_first_models_own_path_and_exports_an_evomistral_that_scores_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = dfs_recipe(tmp.path(), 1, |t| t);
    let init = evomerge(&["evolve", recipe.to_str().unwrap(), "--evaluate-initial"]);
    assert!(init.status.success(), "{}", stderr(&init));
    let identity: f64 = String::from_utf8(init.stdout).unwrap().trim().parse().unwrap();

    let out = tmp.path().join("run");
    run(&recipe, &out);
    let trials = records(&out);
    assert_eq!(trials.len(), 40);
    assert!(trials.iter().all(|t| t["phase"] == "dfs"));
    // Params name slot indicators and scales.
    let params = trials[0]["params"].as_object().unwrap();
    assert!(params.contains_key("in.ft1.L2.r1") && params.contains_key("scale.ft2.L3.r0"), "{params:?}");
    assert!(!params.contains_key("in.ft2.L0.r0"), "fixed ends have no indicator");
    // The journal records each candidate's path: fixed ends, ft2's first and last layers.
    for t in &trials {
        let path = t["path"].as_str().unwrap();
        assert!(path.starts_with("0,") && (path.ends_with(",3") || path.contains(",3:")), "{path}");
    }
    let best = trials.iter().filter_map(|t| t["fitness"].as_f64()).fold(f64::NEG_INFINITY, f64::max);
    assert!(best > identity + 0.005, "best path {best} should beat ft2's own path {identity}");

    let config = json(&out.join("best/config.json"));
    assert_eq!(config["model_type"], "evomistral");
    let path = json(&out.join("best/path.json"));
    let hops = path["hops"].as_array().unwrap();
    assert_eq!(config["num_hops"].as_u64().unwrap() as usize, hops.len());
    let mut used: Vec<u64> = hops.iter().map(|h| h["pool_layer"].as_u64().unwrap()).collect();
    used.sort_unstable();
    used.dedup();
    assert_eq!(config["num_hidden_layers"].as_u64().unwrap() as usize, used.len(), "only the used layers are stored");
    assert_eq!(hops[0]["pool_layer"], 0);
    assert_eq!(hops.last().unwrap()["pool_layer"], 3, "fixed ends: ft2's first and last layers");
    for file in ["plots/path.svg", "plots/path.png", "plots/fitness.svg", "best/tokenizer.json", "best/genome.json"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    // The exported model, loaded as any model directory, scores exactly what its trial recorded.
    let summary = json(&out.join("summary.json"));
    let evolved = &summary["tasks"][0]["scores"][0];
    assert_eq!(evolved["model"], "evolved");
    assert_eq!(evolved["score"].as_f64().unwrap(), best);
    // `generate` and `logits` load it like any model directory.
    let best_dir = out.join("best");
    let g = evomerge(&["generate", "--model", best_dir.to_str().unwrap(), "--prompt", "t10 t26 t42", "--max-new-tokens", "4"]);
    assert!(g.status.success(), "{}", stderr(&g));
    assert!(String::from_utf8_lossy(&g.stdout).contains('t'));
    let logits = tmp.path().join("logits.safetensors");
    let l = evomerge(&["logits", "--model", best_dir.to_str().unwrap(), "--ids", "1,5,9", "--out", logits.to_str().unwrap()]);
    assert!(l.status.success(), "{}", stderr(&l));
    assert!(logits.is_file());
    let again = run(&recipe, &out);
    assert!(again.contains("(0 evaluated now)"), "{again}");
}

#[test]
fn ps_dfs_runs_both_phases_in_one_directory_and_resumes_after_sigkill_in_either() {
    let tmp = tempfile::tempdir().unwrap();
    // Many copies of the task: each trial takes long enough to be killed inside it.
    let recipe = ps_dfs_recipe(tmp.path(), 20);
    let straight = tmp.path().join("straight");
    run(&recipe, &straight);
    let expected = records(&straight);
    assert_eq!(expected.len(), 20);
    assert!(expected[..8].iter().all(|t| t["phase"] == "ps") && expected[8..].iter().all(|t| t["phase"] == "dfs"));
    assert!(straight.join("ps-best/config.json").is_file());
    let ps_best = expected[..8].iter().filter_map(|t| t["fitness"].as_f64()).fold(f64::NEG_INFINITY, f64::max);
    let overall = expected.iter().filter_map(|t| t["fitness"].as_f64()).fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(json(&straight.join("best/genome.json"))["fitness"].as_f64().unwrap(), overall);
    assert!(overall >= ps_best);

    for (phase, after) in [("ps", 2), ("dfs", 10)] {
        let resumed = tmp.path().join(format!("killed-in-{phase}"));
        let killed = kill_mid_trial(&recipe, &resumed, 20, |now, attempt| {
            now.iter().filter(|r| r["status"] == "complete").count() >= after + attempt
                && now.iter().any(|r| r["status"] == "running" && r["phase"] == phase)
        });
        assert!(killed, "could not kill the search during a {phase} trial");
        run(&recipe, &resumed);
        assert_eq!(records(&resumed), expected, "resumed after a kill in the {phase} phase");
        for file in ["best/model.safetensors", "ps-best/model.safetensors"] {
            assert_eq!(std::fs::read(resumed.join(file)).unwrap(), std::fs::read(straight.join(file)).unwrap(), "{file}");
        }
    }
}

/// A bad data-flow recipe: non-zero exit, the key named, and no output directory created.
fn refused(edit: impl Fn(String) -> String, key: &str) {
    let tmp = tempfile::tempdir().unwrap();
    assert_refused(&dfs_recipe(tmp.path(), 1, edit), key);
}

#[test]
fn bad_dfs_recipes_are_refused_before_any_model_loads() {
    refused(|t| t.replace("repeats: 2", "repeats: 0"), "dfs.repeats");
    refused(|t| t.replace("  models: [", "  models: [ps, "), "dfs.models");
    // Another width (mistral_classic: hidden 32) cannot share the pool.
    let other = fixtures().join("mistral/mistral_classic");
    refused(|t| t.replace("/ft1]", &format!("/ft1, {}]", other.display())), "dfs.models[2]");
    // A LLaVA cannot be a pool member.
    let vlm = fixtures().join("vision/llava");
    refused(|t| t.replace("/ft1]", &format!("/ft1, {}]", vlm.display())), "vision-language");
}

#[test]
fn paths_longer_than_max_hops_fail_as_infeasible_and_are_never_evaluated() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = dfs_recipe(tmp.path(), 1, |t| t.replace("repeats: 2", "repeats: 2\n  max_hops: 9").replace("max_trials: 40", "max_trials: 16"));
    let out = tmp.path().join("run");
    run(&recipe, &out);
    let trials = records(&out);
    let infeasible: Vec<_> = trials.iter().filter(|t| t["status"] == "failed").collect();
    assert!(!infeasible.is_empty(), "the first generation draws paths longer than 9 hops");
    for t in infeasible {
        let e = t["error"].as_str().unwrap();
        assert!(e.contains("max_hops = 9"), "{e}");
        assert!(t["items"].is_null(), "an infeasible path is not evaluated");
    }
    assert!(trials.iter().any(|t| t["status"] == "complete"), "some paths fit in 9 hops");
}
