//! The `evomistral` that a data-flow search exports computes the searched candidate: its logits
//! equal the live pool model's on the best trial's path (f32, ≤ 1e-5), for per-hop and for the
//! paper's matrix scales (converted to per-hop scales exactly).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use evomerge_evolve::dfs::DfsSpace;
use evomerge_evolve::{EvolveRecipe, SearchOptions};
use evomerge_mistral::{sequential_positions, LoadOptions, Mistral};

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/merge/models")
}

fn logits(model: &Mistral, ids: &[u32]) -> Vec<f32> {
    let input = Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let positions = sequential_positions(1, ids.len(), 0, &Device::Cpu).unwrap();
    let mut cache = model.new_cache(1);
    model.forward(&input, &positions, None, &mut cache).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

fn search(dir: &Path, scales: &str) -> (EvolveRecipe, PathBuf) {
    let task = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/evolve/task.jsonl");
    let text = format!(
        "dfs:\n  models: [{m}/ft2, {m}/ft1]\n  repeats: 2\n  scales: {scales}\n  dtype: float32\n\
         task: {{kind: custom, data: {task}, metric: loglik, generation: {{batch_size: 8}}}}\n\
         optimizer: {{max_trials: 16, seed: 1}}\n",
        m = models().display(),
        task = task.display()
    );
    let path = dir.join("recipe.yml");
    std::fs::write(&path, text).unwrap();
    let out = dir.join("run");
    let options = SearchOptions::new(out.clone());
    let report = evomerge_evolve::run(&path, &options).unwrap();
    assert!(report.best.is_some());
    (EvolveRecipe::from_file(&path).unwrap(), out)
}

#[test]
fn exported_evomistral_gives_the_searched_candidates_logits() {
    for scales in ["per_hop", "matrix"] {
        let tmp = tempfile::tempdir().unwrap();
        let (recipe, out) = search(tmp.path(), scales);
        let genome: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("best/genome.json")).unwrap()).unwrap();
        let x: Vec<f64> = serde_json::from_value(genome["genome"].clone()).unwrap();

        // The searched candidate: the pool with the best trial's path.
        let opts = LoadOptions::default();
        let ft2 = Mistral::from_dir(&models().join("ft2"), &opts).unwrap();
        let ft1 = Mistral::from_dir(&models().join("ft1"), &opts).unwrap();
        let mut pool = ft2.with_pool(&[&ft1]).unwrap();
        let space = DfsSpace::new(recipe.dfs.as_ref().unwrap(), vec![4, 4], recipe.optimizer.sigma0).unwrap();
        let path = space.path(&x).unwrap();
        pool.set_path(path.clone()).unwrap();

        let exported = Mistral::from_dir(&out.join("best"), &opts).unwrap();
        assert_eq!(exported.path().len(), path.len(), "{scales}");
        let stored: Vec<f64> = exported.path().hops().iter().map(|h| h.scale).collect();
        let searched: Vec<f64> = path.hops().iter().map(|h| h.scale).collect();
        assert_eq!(stored, searched, "{scales}: per-hop scales are stored exactly");
        if scales == "matrix" {
            // Hop t > 0 carries W[previous layer][this layer].
            let m = space.pool_len();
            let w0 = space.genes.iter().position(|g| g.name.starts_with("scale.")).unwrap();
            for (pair, &scale) in path.hops().windows(2).zip(&stored[1..]) {
                let (i, j) = (pair[0].layer, pair[1].layer);
                assert_eq!(scale, x[w0 + i * m + j] as f32 as f64);
            }
        }
        let ids = [1u32, 7, 12, 30, 4, 41, 2, 9];
        let (a, b) = (logits(&pool, &ids), logits(&exported, &ids));
        let diff = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        assert!(diff <= 1e-5, "{scales}: logits differ by {diff}");
    }
}
