//! Both examples' pipelines (`cargo run --example evovlm` / `evollm`) on a reduced budget: the real
//! `evolve` search over the bundled world, the default merges, the test-split table, the bootstrap
//! interval and `summary.json`. The full budget's claim (evolution wins) is measured by the examples
//! themselves (README); here, on a reduced search budget (about a third of the default's cost), the
//! pipeline must run end to end, write what it promises, agree with the world's premise (the
//! English VLM does not answer Japanese; the math models answer in English; the Japanese LLM alone
//! does not solve the word problems), still win with the interval above zero, and give the same
//! table for the same seed.

#[path = "../examples/world/mod.rs"]
mod world;

use std::path::Path;

fn run(exp: &world::Experiment, out: &Path, trials: u64, search_limit: usize, test_limit: Option<usize>) -> world::Summary {
    let opts = world::Options { out: out.to_path_buf(), seed: 0, trials, search_limit: Some(search_limit), test_limit, budget: None, compare: true };
    world::run(exp, &opts).unwrap_or_else(|e| panic!("{} pipeline failed: {e:#}", exp.name))
}

fn score(s: &world::Summary, row: &str) -> f64 {
    s.scores.iter().find(|(n, _)| n == row).unwrap_or_else(|| panic!("no row {row} in {:?}", s.scores)).1
}

/// What every run must have written and reported.
fn check_outputs(exp: &world::Experiment, s: &world::Summary, out: &Path, trials: u64, test_limit: usize, rows: &[&str]) {
    let names: Vec<&str> = s.scores.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, rows, "table rows");
    assert_eq!(s.trials, trials, "the search ran its budget");
    assert_eq!(s.test_items, test_limit);
    for (n, v) in &s.scores {
        assert!(v.is_finite() && (0.0..=1.0).contains(v), "{n} scored {v}");
    }
    assert!(s.best_fitness.is_finite() && s.best_fitness >= 0.0, "best search fitness {}", s.best_fitness);
    let (d, lo, hi) = s.difference;
    assert!(lo <= d && d <= hi, "the bootstrap interval [{lo}, {hi}] holds its mean {d}");
    let expected = score(s, "evolved") - score(s, &s.best_other);
    assert!((d - expected).abs() < 1e-9, "difference against the best other row: {d} vs {expected}");
    let best_other = s.scores[..s.scores.len() - 1].iter().map(|r| r.1).fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(score(s, &s.best_other), best_other, "{} is the best other row", s.best_other);

    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary.json")).expect("summary.json is JSON");
    assert_eq!(summary["example"], exp.name);
    assert_eq!(summary["seed"], 0);
    assert_eq!(summary["metric"], exp.metric.name());
    assert_eq!(summary["search"]["trials"], trials);
    assert_eq!(summary["test"]["items"], test_limit);
    for (n, v) in &s.scores {
        assert_eq!(summary["test"]["scores"][n].as_f64(), Some(*v), "summary.json score of {n}");
    }
    // The evolved model is a normal model directory, and the search left its journal and plots.
    let best = out.join("search/best");
    assert!(best.join("config.json").is_file() && best.join("model.safetensors").is_file(), "{} is a model directory", best.display());
    for f in ["journal.sqlite", "trials.csv", "plots/fitness.svg"] {
        assert!(out.join("search").join(f).is_file(), "the search left {f}");
    }
    assert!(s.table.contains("| evolved |") && s.table.contains("paired bootstrap"), "{}", s.table);
}

/// The evolved merge beats every other row, with the paired bootstrap interval above zero.
fn assert_wins(s: &world::Summary) {
    let evolved = score(s, "evolved");
    for (n, v) in &s.scores[..s.scores.len() - 1] {
        assert!(evolved > *v, "evolved {evolved} does not beat {n} {v}:\n{}", s.table);
    }
    assert!(s.difference.1 > 0.0, "the interval is not above zero:\n{}", s.table);
}

#[test]
fn evovlm_wins_on_a_reduced_budget() {
    // 60 trials on the first 96 search items, the whole test split (326 items): ≈ 10 s in release.
    let dir = tempfile::tempdir().expect("tempdir");
    let exp = world::evovlm();
    let s = run(&exp, dir.path(), 60, 96, None);
    check_outputs(&exp, &s, dir.path(), 60, 326, &["vlm_en", "llm_ja", "ties", "dare_ties", "evolved"]);
    // The premise: the English VLM answers the Japanese questions in English.
    assert!(score(&s, "vlm_en") < 0.1, "vlm_en should not answer in Japanese: {}", s.table);
    assert_wins(&s);
}

#[test]
fn evollm_wins_on_a_reduced_budget() {
    // 80 trials on the 100 search items, the whole test split (250 items): ≈ 12 s in release.
    let dir = tempfile::tempdir().expect("tempdir");
    let exp = world::evollm();
    let s = run(&exp, dir.path(), 80, 100, None);
    check_outputs(&exp, &s, dir.path(), 80, 250, &["llm_ja", "math_a", "math_b", "ties", "dare_ties", "evolved"]);
    // The premise: the math models answer in English, the Japanese model cannot solve the problems.
    assert!(score(&s, "math_a") < 0.02 && score(&s, "math_b") < 0.02, "{}", s.table);
    assert!(score(&s, "llm_ja") < 0.1, "llm_ja should not solve the word problems: {}", s.table);
    assert_wins(&s);
}

#[test]
fn same_seed_same_table() {
    let exp = world::evollm();
    let (a, b) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let s = run(&exp, a.path(), 6, 24, Some(48));
    check_outputs(&exp, &s, a.path(), 6, 48, &["llm_ja", "math_a", "math_b", "ties", "dare_ties", "evolved"]);
    let t = run(&exp, b.path(), 6, 24, Some(48));
    assert_eq!(s.table, t.table, "same seed, same table");
    let best = |d: &tempfile::TempDir| std::fs::read(d.path().join("search/best/model.safetensors")).expect("best model");
    assert!(best(&a) == best(&b), "same seed, same evolved model");
}
