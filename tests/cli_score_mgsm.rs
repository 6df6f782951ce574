//! `evomerge score mgsm`: reference-exact scoring of completions made elsewhere.

use std::path::{Path, PathBuf};
use std::process::Command;

fn evomerge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_evomerge"))
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval-mgsm/extraction.jsonl")
}

#[test]
fn scores_the_reference_corpus_line_by_line() {
    let dir = tempfile::tempdir().unwrap();
    // The corpus lines carry extra fields (pred, correct); give the command only what users give it.
    let input = dir.path().join("completions.jsonl");
    let text = std::fs::read_to_string(corpus()).unwrap();
    let expected: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let lines: String = expected
        .iter()
        .map(|v| {
            serde_json::json!({"completion": v["completion"], "answer_number": v["answer_number"]})
                .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&input, lines).unwrap();
    let out = dir.path().join("scored.jsonl");
    let result = evomerge()
        .args(["score", "mgsm"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let scored: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(scored.len(), expected.len());
    for (s, e) in scored.iter().zip(&expected) {
        assert_eq!(s["correct"], e["correct"], "{}", e["completion"]);
        match e["pred"].as_str().map(|p| p.parse::<f64>().unwrap()) {
            Some(p) if p.is_finite() => assert_eq!(s["pred"].as_f64(), Some(p)),
            _ => assert!(s["pred"].is_null()),
        }
    }
    let n_correct = expected.iter().filter(|e| e["correct"] == true).count();
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        stdout.contains(&format!("{n_correct}/{}", expected.len())),
        "{stdout}"
    );
}

#[test]
fn strict_mode_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("c.jsonl");
    std::fs::write(
        &input,
        "{\"completion\": \"答えは1,000円\", \"answer_number\": 1000}\n",
    )
    .unwrap();
    let out = dir.path().join("o.jsonl");
    let ok = evomerge()
        .args(["score", "mgsm"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .args(["--mode", "strict"])
        .output()
        .unwrap();
    assert!(ok.status.success());
    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&out).unwrap().trim()).unwrap();
    assert_eq!(line["pred"], 1000.0);
    assert_eq!(line["correct"], true);

    std::fs::write(
        &input,
        "{\"completion\": \"1\", \"answer_number\": 1}\n{\"answer_number\": 2}\n",
    )
    .unwrap();
    let bad = evomerge()
        .args(["score", "mgsm"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("line 2"), "{err}");
    let unknown = evomerge()
        .args(["score", "mgsm"])
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .args(["--mode", "lenient"])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
}
