//! Cheap fitness end to end (`task.budget`): a racing search killed in the middle of a race resumes
//! to the records of an uninterrupted one; a subset search ends by re-scoring its top candidates on
//! the full search set, in the journal, and exports the best of those; an IRT search calibrates on
//! its first generation and then answers only the anchors.

mod evolve_support;

use std::path::{Path, PathBuf};

use evolve_support::{evomerge, kill_mid_trial, records, stderr, tiny_genome, tiny_task};

fn recipe(dir: &Path, budget: &str, trials: u64, repeat: usize) -> PathBuf {
    let text = format!(
        "{}{}  budget: {budget}\n  rescore: 2\noptimizer: {{max_trials: {trials}, seed: 3, population: 6}}\n",
        tiny_genome(),
        tiny_task(dir, repeat)
    );
    let path = dir.join("recipe.yml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(recipe: &Path, out: &Path) {
    let o = evomerge(&["evolve", recipe.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

fn items(r: &serde_json::Value) -> u64 {
    r["items"].as_u64().unwrap()
}

#[test]
fn a_race_killed_mid_trial_resumes_repeating_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // 23 items x 4; races look every 8 items from 16 on.
    let path = recipe(tmp.path(), "{racing: {batch: 8, min_items: 16, confidence: 0.9}}", 18, 4);
    let straight = tmp.path().join("straight");
    run(&path, &straight);
    let expected = records(&straight);
    assert_eq!(expected.len(), 18, "racing answers every candidate; survivors answer everything, so nothing is re-scored");
    let total = 23 * 4;
    assert!(expected[..6].iter().all(|r| r.get("plan").is_none() && items(r) == total), "generation 0 has no incumbent: every item");
    let raced: Vec<&serde_json::Value> = expected[6..].iter().filter(|r| r["plan"]["kind"] == "race").collect();
    assert_eq!(raced.len(), 12, "later generations race the incumbent");
    let dropped: Vec<&&serde_json::Value> = raced.iter().filter(|r| items(r) < total).collect();
    assert!(!dropped.is_empty(), "no candidate was dropped early; the race saved nothing");
    for r in &dropped {
        let ids = r["item_ids"].as_array().unwrap();
        assert_eq!(ids.len() as u64, items(r));
        assert_eq!(ids.len() % 8, 0, "a race stops between batches");
        let against = r["plan"]["against"].as_u64().unwrap() as usize;
        assert!(r["fitness"].as_f64().unwrap() < expected[against]["fitness"].as_f64().unwrap(), "dropped above its incumbent");
    }

    let resumed = tmp.path().join("resumed");
    let killed = kill_mid_trial(&path, &resumed, 18, |now, attempt| {
        now.iter().filter(|r| r["plan"]["kind"] == "race" && r["status"] == "complete").count() >= 1 + attempt
            && now.iter().any(|r| r["plan"]["kind"] == "race" && r["status"] == "running")
    });
    assert!(killed, "could not kill the search during a race");
    run(&path, &resumed);
    assert_eq!(records(&resumed), expected, "a race resumed after SIGKILL must record what an uninterrupted one does");
    assert_eq!(
        std::fs::read(resumed.join("best/model.safetensors")).unwrap(),
        std::fs::read(straight.join("best/model.safetensors")).unwrap()
    );
}

#[test]
fn a_subset_search_ends_with_a_journalled_full_rescoring() {
    let tmp = tempfile::tempdir().unwrap();
    let path = recipe(tmp.path(), "{subset: 6}", 12, 2);
    let out = tmp.path().join("run");
    run(&path, &out);
    let all = records(&out);
    let total = 23 * 2;
    let (search, rescored) = all.split_at(12);
    assert!(search.iter().all(|r| items(r) == 6 && r["plan"]["items"].as_array().unwrap().len() == 6));
    // The same seeded subset for every trial.
    assert!(search.iter().all(|r| r["plan"] == search[0]["plan"]));
    assert_eq!(rescored.len(), 2, "the top 2 are re-scored: {rescored:?}");
    let mut top: Vec<&serde_json::Value> = search.iter().collect();
    top.sort_by(|a, b| b["fitness"].as_f64().unwrap().total_cmp(&a["fitness"].as_f64().unwrap()));
    for (r, t) in rescored.iter().zip(&top) {
        assert_eq!(r["rescore_of"], t["trial"]);
        assert_eq!(r["genome"], t["genome"]);
        assert_eq!(items(r), total);
        assert!(r.get("item_ids").is_none());
        let scores: Vec<f64> = r["item_scores"].as_array().unwrap().iter().map(|s| s.as_f64().unwrap()).collect();
        let mean = scores.iter().sum::<f64>() / scores.len() as f64;
        assert!((mean - r["fitness"].as_f64().unwrap()).abs() < 1e-12);
    }
    // best/ is the better re-scored candidate, by its full-set fitness.
    let best = rescored.iter().max_by(|a, b| a["fitness"].as_f64().unwrap().total_cmp(&b["fitness"].as_f64().unwrap())).unwrap();
    let best_json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("best/genome.json")).unwrap()).unwrap();
    assert_eq!(best_json["trial"], best["trial"], "{best_json}");

    // Resuming the finished search changes nothing; asking it for more trials is refused clearly.
    run(&path, &out);
    assert_eq!(records(&out), all);
    let o = evomerge(&["evolve", path.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet", "--max-trials", "18"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("final re-scoring"), "{}", stderr(&o));
}

#[test]
fn an_irt_search_calibrates_then_answers_its_anchors() {
    let tmp = tempfile::tempdir().unwrap();
    // IRT needs scores in [0, 1]: `exact` on the tiny models (mostly 0; the mechanics are what is checked here).
    let path = recipe(tmp.path(), "{irt: 5}", 12, 1);
    let text = std::fs::read_to_string(&path).unwrap().replace("metric: loglik", "metric: exact").replace("batch_size: 8", "batch_size: 8, max_new_tokens: 3");
    std::fs::write(&path, text).unwrap();
    let out = tmp.path().join("run");
    run(&path, &out);
    let all = records(&out);
    assert!(all[..6].iter().all(|r| r.get("plan").is_none() && items(r) == 23), "the first generation calibrates on every item");
    assert!(all[6..12].iter().all(|r| r["plan"]["kind"] == "irt" && items(r) == 5 && r["item_ids"].as_array().unwrap().len() == 5));
    assert!(all[6..12].iter().all(|r| r["generated_tokens"].as_u64().unwrap() <= 5 * 3));
    // Re-scoring: the top two by search fitness, unless they answered everything already.
    assert!(all[12..].iter().all(|r| r["rescore_of"].is_u64() && items(r) == 23));

    // A loglik recipe cannot use IRT.
    let bad = recipe(tmp.path(), "{irt: 5}", 12, 1);
    let o = evomerge(&["evolve", bad.to_str().unwrap(), "--out", tmp.path().join("bad").to_str().unwrap(), "--quiet"]);
    assert!(!o.status.success() && stderr(&o).contains("task.budget"), "{}", stderr(&o));
    assert!(!tmp.path().join("bad").exists());
}
