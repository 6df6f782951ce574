//! `evomerge eval` end to end on tiny random checkpoints and the `datasets/` samples: the pipeline,
//! the files and the summary fields. The scores of random models say nothing about the models, but
//! they are exact: each test derives them from the completions the run wrote (the scorers themselves
//! are checked against the Python reference in crates/eval).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use evomerge_eval::ja::CharFallbackTokenizer;
use evomerge_eval::mgsm::{self, ExtractionMode};
use evomerge_eval::rouge::RougeJa;

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

/// `question<TAB>answer` rows of an MGSM-style file, read here independently of the datasets crate.
fn tsv_rows(path: &Path) -> Vec<(String, f64)> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| {
            let (q, a) = l.split_once('\t').expect("question<TAB>answer");
            (q.to_string(), a.parse().expect("a plain number"))
        })
        .collect()
}

/// `evomerge eval mgsm-ja` with the tiny Mistral on the first five rows of `data`, greedy, 12 new
/// tokens; returns the summary and the prediction lines.
fn mgsm_on_tiny_mistral(data: &Path, out: &Path) -> (serde_json::Value, Vec<serde_json::Value>) {
    let result = evomerge(
        &[
            "eval",
            "mgsm-ja",
            "--model",
            "tests/fixtures/mistral/generation/model",
            "--limit",
            "5",
            "--batch",
            "2",
            "--max-new-tokens",
            "12",
            "--data",
        ],
        &[data, Path::new("--out"), out],
    );
    assert!(
        result.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    (
        read_json(out.join("summary.json")),
        read_jsonl(out.join("predictions.jsonl")),
    )
}

#[test]
fn mgsm_ja_runs_on_a_tiny_mistral_and_the_sample() {
    let out = tempfile::tempdir().unwrap();
    let sample = root().join("datasets/mgsm_ja_sample.tsv");
    let (summary, lines) = mgsm_on_tiny_mistral(&sample, out.path());
    assert_eq!(summary["benchmark"], "mgsm-ja");
    assert_eq!(summary["items"], 5);
    assert_eq!(summary["extraction_mode"], "paper");
    assert_eq!(summary["generation"]["max_new_tokens"], 12);
    assert_eq!(summary["generation"]["num_beams"], 1);
    assert_eq!(summary["generation"]["stop"].as_array().unwrap().len(), 4);
    assert!(summary["language_detector"]
        .as_str()
        .is_some_and(|d| !d.is_empty()));
    assert!(summary["generator"].as_str().unwrap().contains("mistral"));
    assert_eq!(lines.len(), 5);

    // Each item's score, recomputed from the completion the run wrote and the answer read from the
    // data file with the paper's extraction (checked against the Python reference in
    // crates/eval/tests/mgsm_extraction.rs): the run must have counted exactly these.
    let rows = tsv_rows(&sample);
    let scored: Vec<mgsm::Scored> = lines
        .iter()
        .zip(&rows)
        .enumerate()
        .map(|(i, (line, (question, answer)))| {
            assert_eq!(line["index"], i);
            assert_eq!(line["question"], question.as_str());
            assert_eq!(line["answer_number"], *answer);
            let s = mgsm::score(
                line["completion"].as_str().unwrap(),
                *answer,
                ExtractionMode::Paper,
            );
            assert_eq!(line["pred"].as_f64(), s.pred, "item {i}");
            assert_eq!(line["correct"], s.correct, "item {i}");
            s
        })
        .collect();
    // The fixture is a 2-layer random Mistral over a 384-token byte-level vocabulary: its completions
    // are byte fragments and stray kana, not arithmetic. Only one of the five holds a number at all
    // (a lone "1." for the question whose answer is 16), so nothing is correct: acc is exactly 0/5,
    // and acc_ja, which counts correct answers that are also Japanese, is 0/5 too.
    assert_eq!(scored.iter().filter(|s| s.pred.is_none()).count(), 4);
    assert_eq!(scored.iter().filter(|s| s.correct).count(), 0);
    assert_eq!(summary["no_number"], 4);
    assert_eq!(summary["correct"], 0);
    assert_eq!(summary["metrics"]["acc"], 0.0);
    assert_eq!(summary["correct_ja"], 0);
    assert_eq!(summary["metrics"]["acc_ja"], 0.0);
    // Neither EOS id (2, 104) nor a stop string ("Instruction", "Response", ...) comes up in 12
    // random tokens, so every item used the whole budget.
    assert_eq!(summary["hit_max_new_tokens"], 5);
    for line in &lines {
        assert_eq!(line["hit_max_new_tokens"], true);
        assert_eq!(line["new_tokens"], 12);
    }

    // The same questions, each answer replaced by the number its completion holds (where it holds
    // one). The prompts, hence the completions, do not change, so exactly the items with a number
    // become correct: 1 of 5. Its completion is mostly replacement characters, which no detector
    // takes for Japanese, so acc_ja stays 0.
    let data = out.path().join("answers_from_completions.tsv");
    let text: String = rows
        .iter()
        .take(5)
        .zip(&scored)
        .map(|((q, a), s)| format!("{q}\t{}\n", s.pred.unwrap_or(*a)))
        .collect();
    std::fs::write(&data, text).unwrap();
    let out2 = tempfile::tempdir().unwrap();
    let (summary2, lines2) = mgsm_on_tiny_mistral(&data, out2.path());
    for (a, b) in lines.iter().zip(&lines2) {
        assert_eq!(a["completion"], b["completion"]);
    }
    assert_eq!(summary2["correct"], 1);
    assert_eq!(summary2["metrics"]["acc"], 1.0 / 5.0);
    let correct: Vec<&serde_json::Value> = lines2.iter().filter(|l| l["correct"] == true).collect();
    assert_eq!(correct.len(), 1);
    assert_eq!(correct[0]["index"], 2);
    assert!(correct[0]["ja_probability"].as_f64().unwrap() < 0.5);
    assert_eq!(summary2["correct_ja"], 0);
    assert_eq!(summary2["metrics"]["acc_ja"], 0.0);
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
        let lines = read_jsonl(out.path().join("predictions.jsonl"));
        assert_eq!(lines.len(), n);
        // The random 2-layer LLaVA answers in ASCII fragments ("tpWctc.", "ctcpppp"); the references
        // are Japanese (kana, kanji, "。", and the digit 1 of "1つです。", which no prediction has).
        // Both segmentations (MeCab and per character) cut the normalised text into pieces, so with
        // no character in common there is no token in common: every item's ROUGE-1/2/L F is 0.
        let char_rouge = RougeJa::new(CharFallbackTokenizer);
        for line in &lines {
            let prediction = line["prediction"].as_str().unwrap();
            let answer = line["answer"].as_str().unwrap();
            assert!(prediction.is_ascii(), "{bench}: {prediction:?}");
            assert!(
                !answer.chars().any(|c| prediction.contains(c)),
                "{bench}: {answer:?} / {prediction:?}"
            );
            assert_eq!(
                char_rouge.score_pair(answer, prediction).rouge_l.fmeasure,
                0.0
            );
            assert_eq!(line["rougeL"], 0.0, "{bench}");
            // The reference is Japanese and the ASCII prediction is not, so the `_ja` rule scores
            // it as empty: still 0.
            assert_eq!(line["counted_empty_for_ja"], true, "{bench}");
            assert_eq!(line["rougeL_ja"], 0.0, "{bench}");
            // No EOS within 6 tokens: every answer used the budget.
            assert_eq!(line["new_tokens"], 6, "{bench}");
            assert_eq!(line["hit_max_new_tokens"], true, "{bench}");
        }
        assert_eq!(summary["hit_max_new_tokens"], n);
        // All-zero item scores have mean 0 and every bootstrap resample of them averages 0, so each
        // aggregate (mean, low, mid, high; plain and `_ja`) is exactly 0.
        let metrics = summary["metrics"].as_object().unwrap();
        assert_eq!(metrics.len(), 24, "{bench}: {metrics:?}");
        for (key, v) in metrics {
            assert_eq!(v.as_f64(), Some(0.0), "{bench}: {key}");
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
