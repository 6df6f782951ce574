//! Every merge method with numeric parameters is a possible `genome.merge_method`: a tiny search
//! (3 trials, loglik on the merge fixtures) runs for each, its genes are the method's parameters,
//! and `best/recipe.yml` rebuilds `best/` bit for bit through the file merger.

use std::path::{Path, PathBuf};

use evomerge_evolve::recipe::EVOLVABLE_METHODS;
use evomerge_evolve::{run, SearchOptions};
use evomerge_merge::{merge_to_dir, MergeConfig, MergeOptions};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// (method, base model?, models, genes, extra genome lines)
const SEARCHES: [(&str, bool, &[&str], &str, &str); 10] = [
    ("breadcrumbs", true, &["ft1", "ft2"], "[density, gamma]", "  fixed: {weight: 0.5}\n"),
    ("breadcrumbs_ties", true, &["ft1", "ft2"], "[density, weight]", "  fixed: {gamma: 0.05}\n"),
    ("della", true, &["ft1", "ft2"], "[density, weight]", "  bounds: {density: [0.3, 0.7]}\n  fixed: {epsilon: 0.2}\n"),
    ("della_linear", true, &["ft1", "ft2"], "[epsilon]", "  bounds: {epsilon: [0.05, 0.25]}\n  fixed: {weight: 0.5, density: 0.5}\n"),
    ("sce", true, &["ft1", "ft2"], "[select_topk]", ""),
    ("nearswap", true, &["ft1"], "[t]", "  bounds: {t: [0.0001, 0.05]}\n"),
    ("nuslerp", false, &["ft1", "ft2"], "[weight]", ""),
    ("multislerp", true, &["ft1", "ft2"], "[weight]", ""),
    ("ram", true, &["ft1", "ft2"], "[epsilon]", "  bounds: {epsilon: [0.001, 0.04]}\n"),
    ("ramplus_tl", true, &["ft1", "ft2"], "[r, alpha]", "  fixed: {epsilon: 0.02}\n"),
];

fn write_recipe(dir: &Path, method: &str, base: bool, models: &[&str], genes: &str, extra: &str) -> PathBuf {
    let m = fixtures().join("merge/models");
    std::fs::copy(fixtures().join("evolve/task.jsonl"), dir.join("task.jsonl")).unwrap();
    let base_line = if base { format!("  base_model: {}/base\n", m.display()) } else { String::new() };
    let model_list: Vec<String> = models.iter().map(|name| format!("{}/{name}", m.display())).collect();
    let text = format!(
        "genome:\n  merge_method: {method}\n{base_line}  models: [{}]\n  parameters: {genes}\n{extra}  dtype: float32\n\
task:\n  kind: custom\n  data: task.jsonl\n  metric: loglik\n  generation: {{batch_size: 8}}\noptimizer: {{max_trials: 3, seed: 5}}\n",
        model_list.join(", ")
    );
    let path = dir.join("recipe.yml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn each_new_method_runs_a_tiny_search_whose_best_recipe_rebuilds_best() {
    for (method, base, models, genes, extra) in SEARCHES {
        assert!(EVOLVABLE_METHODS.contains(&method), "{method} is not evolvable");
        let tmp = tempfile::tempdir().unwrap();
        let path = write_recipe(tmp.path(), method, base, models, genes, extra);
        let out = tmp.path().join("run");
        let options = SearchOptions::new(out.clone());
        let report = run(&path, &options).unwrap_or_else(|e| panic!("{method}: {e}"));
        assert_eq!(report.trials, 3, "{method}");
        let best = report.best.unwrap_or_else(|| panic!("{method}: no best trial"));
        assert!(best.fitness.is_some_and(f64::is_finite), "{method}: fitness {:?}", best.fitness);

        let recipe = MergeConfig::from_file(&out.join("best/recipe.yml")).unwrap();
        assert_eq!(recipe.merge_method, method);
        let genome: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("best/genome.json")).unwrap()).unwrap();
        let seed = genome["merge_seed"].as_u64().unwrap();
        let rebuilt = tmp.path().join("rebuilt");
        merge_to_dir(&recipe, &rebuilt, &MergeOptions { seed, progress: false, ..Default::default() }).unwrap();
        assert!(
            std::fs::read(rebuilt.join("model.safetensors")).unwrap()
                == std::fs::read(out.join("best/model.safetensors")).unwrap(),
            "{method}: best/recipe.yml does not rebuild best/"
        );
    }
}

#[test]
fn methods_without_numeric_genes_are_refused_with_the_evolvable_list() {
    let tmp = tempfile::tempdir().unwrap();
    for method in ["model_stock", "karcher", "passthrough", "arcee_fusion"] {
        let path = write_recipe(tmp.path(), method, true, &["ft1", "ft2"], "[weight]", "");
        let e = evomerge_evolve::EvolveRecipe::from_yaml(&std::fs::read_to_string(&path).unwrap()).unwrap_err().to_string();
        assert!(e.contains("genome.merge_method") && e.contains("cannot be evolved") && e.contains("nuslerp"), "{e}");
    }
}
