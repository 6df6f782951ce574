//! `evomerge eval` end to end on tiny random checkpoints and the `datasets/` samples: the pipeline,
//! the files and the summary fields (scores of random models are meaningless; the scripted-generator
//! tests in crates/eval check the scoring itself).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn evomerge(args: &[&str], extra: &[&Path]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_evomerge"));
    cmd.current_dir(root()).args(args);
    for p in extra {
        cmd.arg(p);
    }
    cmd.output().expect("the evomerge binary runs")
}

fn read_json(path: PathBuf) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .expect("valid JSON")
}

fn read_jsonl(path: PathBuf) -> Vec<serde_json::Value> {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

#[test]
fn mgsm_ja_runs_on_a_tiny_mistral_and_the_sample() {
    let out = tempfile::tempdir().unwrap();
    let result = evomerge(
        &[
            "eval",
            "mgsm-ja",
            "--model",
            "tests/fixtures/mistral/generation/model",
            "--data",
            "datasets/mgsm_ja_sample.tsv",
            "--limit",
            "5",
            "--batch",
            "2",
            "--max-new-tokens",
            "12",
            "--out",
        ],
        &[out.path()],
    );
    assert!(
        result.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    let summary = read_json(out.path().join("summary.json"));
    assert_eq!(summary["benchmark"], "mgsm-ja");
    assert_eq!(summary["items"], 5);
    assert_eq!(summary["extraction_mode"], "paper");
    assert_eq!(summary["generation"]["max_new_tokens"], 12);
    assert_eq!(summary["generation"]["num_beams"], 1);
    assert_eq!(summary["generation"]["stop"].as_array().unwrap().len(), 4);
    let acc = summary["metrics"]["acc"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    assert!(summary["metrics"]["acc_ja"].is_number());
    assert!(summary["language_detector"]
        .as_str()
        .is_some_and(|d| !d.is_empty()));
    assert!(summary["hit_max_new_tokens"].as_u64().unwrap() <= 5);
    assert!(summary["generator"].as_str().unwrap().contains("mistral"));
    let lines = read_jsonl(out.path().join("predictions.jsonl"));
    assert_eq!(lines.len(), 5);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["index"], i);
        assert!(line["completion"].is_string());
        assert!(line["new_tokens"].as_u64().unwrap() <= 12);
        assert!(line["correct"].is_boolean());
    }
    // Items that ran out of budget generated exactly the budget.
    for line in &lines {
        if line["hit_max_new_tokens"] == true {
            assert_eq!(line["new_tokens"], 12);
        }
    }
}

#[test]
fn mgsm_ja_bad_rows_fail_or_are_listed() {
    let out = tempfile::tempdir().unwrap();
    let base = [
        "eval",
        "mgsm-ja",
        "--model",
        "tests/fixtures/mistral/generation/model",
        "--data",
        "datasets/bad/mgsm_ja_bad.tsv",
        "--max-new-tokens",
        "2",
        "--no-lid",
    ];
    let fail = evomerge(&[&base[..], &["--out"]].concat(), &[out.path()]);
    assert!(!fail.status.success());
    let err = String::from_utf8_lossy(&fail.stderr);
    assert!(err.contains("row 1"), "{err}");
    assert!(!out.path().join("summary.json").exists());

    let skip = evomerge(
        &[&base[..], &["--on-bad-row", "skip", "--out"]].concat(),
        &[out.path()],
    );
    assert!(
        skip.status.success(),
        "{}",
        String::from_utf8_lossy(&skip.stderr)
    );
    let summary = read_json(out.path().join("summary.json"));
    assert_eq!(summary["items"], 2);
    let skipped: Vec<u64> = summary["skipped_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(skipped, vec![1, 2, 3]);
    assert!(summary["language_detector"].is_null());
}

#[test]
fn vqa_runs_on_a_tiny_llava_and_both_samples() {
    for (bench, data, n) in [
        ("ja-vg-vqa-500", "datasets/ja_vg_vqa_sample.parquet", 3),
        ("ja-vlm-wild", "datasets/ja_vlm_wild_sample.parquet", 3),
    ] {
        let out = tempfile::tempdir().unwrap();
        let result = evomerge(
            &[
                "eval",
                bench,
                "--model",
                "tests/fixtures/vision/llava",
                "--data",
                data,
                "--max-new-tokens",
                "6",
                "--batch",
                "2",
                "--char-fallback",
                "--out",
            ],
            &[out.path()],
        );
        assert!(
            result.status.success(),
            "{bench}: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        let summary = read_json(out.path().join("summary.json"));
        assert_eq!(summary["benchmark"], bench);
        assert_eq!(summary["items"], n);
        assert_eq!(summary["generation"]["num_beams"], 5);
        assert_eq!(summary["generation"]["repetition_penalty"], 1.5);
        assert_eq!(summary["generation"]["max_new_tokens"], 6);
        let tokenizer = summary["tokenizer"].as_str().unwrap();
        assert!(
            tokenizer == "mecab-unidic-lite" || tokenizer == "char-fallback",
            "{tokenizer}"
        );
        for key in ["rougeL", "rougeL_mean", "rougeL_ja", "rougeL_ja_mean"] {
            let v = summary["metrics"][key]
                .as_f64()
                .unwrap_or_else(|| panic!("{bench}: no {key}"));
            assert!((0.0..=100.0).contains(&v), "{key} = {v}");
        }
        let lines = read_jsonl(out.path().join("predictions.jsonl"));
        assert_eq!(lines.len(), n);
        for line in &lines {
            assert!(line["prediction"].is_string());
            assert!(line["rougeL"].is_number());
            assert!(line["counted_empty_for_ja"].is_boolean());
            assert!(line["new_tokens"].as_u64().unwrap() <= 6);
        }
    }
}

#[test]
fn vqa_bad_images_are_reported_by_row() {
    let out = tempfile::tempdir().unwrap();
    let result = evomerge(
        &[
            "eval",
            "ja-vg-vqa-500",
            "--model",
            "tests/fixtures/vision/llava",
            "--data",
            "datasets/bad/ja_vg_vqa_bad.parquet",
            "--max-new-tokens",
            "2",
            "--no-lid",
            "--char-fallback",
            "--out",
        ],
        &[out.path()],
    );
    assert!(!result.status.success());
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(
        err.contains("row 1") && err.contains("does not decode"),
        "{err}"
    );
}

#[test]
fn gsm8k_ja_search_set_runs_with_a_custom_template_and_strict_mode() {
    let out = tempfile::tempdir().unwrap();
    let template = out.path().join("t.txt");
    std::fs::write(&template, "問題: {input}\n答え:").unwrap();
    let result = evomerge(
        &[
            "eval",
            "gsm8k-ja",
            "--model",
            "tests/fixtures/mistral/generation/model",
            "--data",
            "datasets/gsm8k_ja_sample.jsonl",
            "--limit",
            "3",
            "--max-new-tokens",
            "4",
            "--mode",
            "strict",
            "--no-lid",
            "--template",
        ],
        &[&template, Path::new("--out"), out.path()],
    );
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let summary = read_json(out.path().join("summary.json"));
    assert_eq!(summary["benchmark"], "gsm8k-ja-search");
    assert_eq!(summary["items"], 3);
    assert_eq!(summary["extraction_mode"], "strict");
    assert_eq!(summary["prompt_template"], "問題: {input}\n答え:");
    assert!(summary["metrics"]["acc_ja"].is_null());

    std::fs::write(&template, "no placeholder").unwrap();
    let bad = evomerge(
        &[
            "eval",
            "gsm8k-ja",
            "--model",
            "tests/fixtures/mistral/generation/model",
            "--data",
            "datasets/gsm8k_ja_sample.jsonl",
            "--template",
        ],
        &[&template],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("{input}"));
}
