//! The recipes shipped in evals/recipes parse, validate and describe the paper's genomes.

use std::path::PathBuf;

use evomerge_evolve::recipe::{Metric, TaskKind};
use evomerge_evolve::{EvolveRecipe, GenomeSpace, SearchSpace};

fn shipped(name: &str) -> EvolveRecipe {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../evals/recipes").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    EvolveRecipe::from_yaml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn evollm_recipes_are_the_papers_six_gene_dare_ties_search() {
    for (file, math) in [("evollm-jp.yml", "WizardLM/WizardMath-7B-V1.1"), ("evollm-jp-a.yml", "upaya07/Arithmo2-Mistral-7B")] {
        let r = shipped(file);
        assert_eq!(r.ps_genome().unwrap().merge_method, "dare_ties");
        assert_eq!(r.ps_genome().unwrap().base_model.as_deref(), Some("mistralai/Mistral-7B-v0.1"));
        assert_eq!(r.ps_genome().unwrap().models, ["augmxnt/shisa-gamma-7b-v1", math, "GAIR/Abel-7B-002"]);
        assert_eq!((r.task.kind, r.task.metric, r.task.limit), (TaskKind::Gsm8kJa, Metric::Accuracy, Some(1069)));
        assert_eq!(r.optimizer.max_trials, 1000);
        let space = GenomeSpace::new(&r, 32).unwrap();
        assert_eq!(space.dim(), 6);
        assert!(space.x0().iter().all(|&v| v == 0.5));
    }
}

#[test]
fn evovlm_recipe_merges_llava_with_shisa_on_mistral() {
    let r = shipped("evovlm-jp.yml");
    assert_eq!(r.ps_genome().unwrap().models, ["llava-hf/llava-v1.6-mistral-7b-hf", "augmxnt/shisa-gamma-7b-v1"]);
    assert_eq!(r.ps_genome().unwrap().base_model.as_deref(), Some("mistralai/Mistral-7B-v0.1"));
    assert_eq!((r.task.kind, r.task.metric), (TaskKind::JaVgVqa, Metric::RougeLJa));
    assert_eq!(r.task.split.as_deref(), Some("train"), "the search set is disjoint from the 500 test rows");
    assert_eq!((r.task.generation.num_beams, r.task.generation.repetition_penalty), (5, 1.5));
    assert_eq!(GenomeSpace::new(&r, 32).unwrap().dim(), 4);
}

#[test]
fn evollm_10b_recipe_is_ps_then_dfs_over_the_ps_result_and_shisa() {
    use evomerge_evolve::dfs::{DfsSpace, ScaleGenes};
    let r = shipped("evollm-jp-10b.yml");
    assert_eq!(r.ps_genome().unwrap().models.len(), 3);
    let d = r.dfs.as_ref().unwrap();
    assert_eq!(d.models, ["ps", "augmxnt/shisa-gamma-7b-v1"]);
    assert_eq!((d.repeats, d.scales, d.fixed_ends, d.population, d.max_trials), (3, ScaleGenes::Matrix, true, Some(128), Some(12800)));
    let space = DfsSpace::new(d, vec![32, 32], r.optimizer.sigma0).unwrap();
    assert_eq!(space.slots(), 192);
    // 190 indicators (two fixed ends) + 64 x 64 scales.
    assert_eq!(space.genes.len(), 190 + 64 * 64);
    let path = space.path(&space.x0()).unwrap();
    assert_eq!(path.len(), 32, "the initial path is the PS model itself");
}
