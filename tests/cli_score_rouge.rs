//! `evomerge score rouge-ja` end to end: per-line scores equal the paper's stack (from the committed
//! corpus), the aggregate is printed, bad input names its line, output is written atomically, and
//! a missing dictionary is a clear error unless the (labelled) character fallback is asked for.
//! Needs the UniDic-lite dictionary (scripts/fetch-assets.sh); fails, never skips, without it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn corpus() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/eval-ja/rouge_ja_corpus.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("corpus present"))
        .expect("corpus is JSON")
}

fn evomerge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_evomerge"))
}

fn write_pairs(dir: &Path, pairs: &[Value]) -> PathBuf {
    let path = dir.join("pairs.jsonl");
    let text: String = pairs
        .iter()
        .map(|p| {
            serde_json::json!({"reference": p["reference"], "prediction": p["prediction"]})
                .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&path, text).expect("write pairs");
    path
}

#[test]
fn scores_match_the_reference_line_by_line() {
    let corpus = corpus();
    let pairs = &corpus["pairs"].as_array().expect("pairs")[..40];
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_pairs(dir.path(), pairs);
    let out = dir.path().join("scores.jsonl");
    let result = evomerge()
        .args(["score", "rouge-ja"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "failed: {}\n{}",
        stdout,
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(stdout.contains("bootstrap mid"), "{stdout}");
    assert!(stdout.contains("tokenizer=mecab-unidic-lite"), "{stdout}");
    let lines: Vec<Value> = std::fs::read_to_string(&out)
        .expect("output written")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), pairs.len());
    for (line, want) in lines.iter().zip(pairs) {
        for key in ["rouge1", "rouge2", "rougeL"] {
            let expected = want[key][2].as_f64().expect("fmeasure") * 100.0;
            assert_eq!(
                line[key].as_f64(),
                Some(expected),
                "{key} of {}",
                want["reference"]
            );
        }
        assert_eq!(line["tokenizer"], "mecab-unidic-lite");
    }
    // No temporary file is left beside the output.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn malformed_line_is_reported_with_its_number() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("bad.jsonl");
    std::fs::write(
        &input,
        "{\"reference\": \"犬\", \"prediction\": \"犬\"}\n{\"reference\": \"猫\"}\n",
    )
    .expect("write");
    let out = dir.path().join("scores.jsonl");
    let result = evomerge()
        .args(["score", "rouge-ja"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run");
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("line 2"), "{stderr}");
    assert!(!out.exists(), "no partial output on error");
}

#[test]
fn missing_dictionary_is_a_clear_error_and_fallback_is_labelled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let corpus = corpus();
    let input = write_pairs(dir.path(), &corpus["pairs"].as_array().expect("pairs")[..3]);
    let out = dir.path().join("scores.jsonl");
    let empty = dir.path().join("no-dictionary");
    std::fs::create_dir(&empty).expect("mkdir");
    let result = evomerge()
        .args(["score", "rouge-ja", "--no-lid"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .env("EVOMERGE_UNIDIC_DIR", &empty)
        .output()
        .expect("run");
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("scripts/fetch-assets.sh"), "{stderr}");

    let result = evomerge()
        .args(["score", "rouge-ja", "--no-lid", "--char-fallback"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .env("EVOMERGE_UNIDIC_DIR", &empty)
        .output()
        .expect("run");
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(String::from_utf8_lossy(&result.stdout).contains("tokenizer=char-fallback"));
    let text = std::fs::read_to_string(&out).expect("output");
    assert_eq!(text.lines().count(), 3);
    assert!(
        text.lines()
            .all(|l| l.contains("\"tokenizer\":\"char-fallback\"")),
        "{text}"
    );
}

/// The whole corpus through the CLI with the Rust fastText port deciding the `_ja` pass: the printed
/// bootstrap mids equal the paper stack's (seed 42), for rougeL and for rougeL_ja.
#[test]
fn whole_corpus_summary_matches_the_paper_including_rouge_l_ja() {
    let corpus = corpus();
    let pairs = corpus["pairs"].as_array().expect("pairs");
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_pairs(dir.path(), pairs);
    let out = dir.path().join("scores.jsonl");
    let lid = std::env::var("EVOMERGE_LID176").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/evomerge/lid.176.ftz")
    });
    let result = evomerge()
        .args(["score", "rouge-ja", "--lid", &lid])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let mid = |v: &Value| format!("bootstrap mid {:>7.3}", v["mid"].as_f64().expect("mid"));
    let rouge_l = mid(&corpus["aggregate"]["rougeL"]);
    let rouge_l_ja = mid(&corpus["aggregate_ja"]["rougeL"]);
    let (main, ja) = stdout
        .split_once("_ja pass")
        .expect("a _ja section is printed");
    assert!(main.contains(&rouge_l), "want {rouge_l:?} in\n{stdout}");
    assert!(ja.contains(&rouge_l_ja), "want {rouge_l_ja:?} in\n{stdout}");
    let lines = std::fs::read_to_string(&out).expect("output");
    assert!(lines
        .lines()
        .all(|l| l.contains("\"rougeL_ja\"") && l.contains("fasttext-lid.176")));
}
