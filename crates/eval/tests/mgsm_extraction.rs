//! Paper-mode answer extraction must equal the reference (Python `re.findall(r"\d*\.?\d+", ...)[-1]` →
//! `float`, then `answer == pred`) on the committed corpus made by
//! `tests/fixtures/eval-mgsm/generate.py`.

use std::path::PathBuf;

use evomerge_eval::mgsm::{extract_paper, is_correct, score_jsonl, ExtractionMode};

fn corpus_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/eval-mgsm/extraction.jsonl")
}

struct Case {
    completion: String,
    answer_number: f64,
    pred: Option<f64>,
    correct: bool,
}

fn load_corpus() -> Vec<Case> {
    let text = std::fs::read_to_string(corpus_path()).expect("the committed corpus is readable");
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("corpus line is JSON");
            Case {
                completion: v["completion"].as_str().expect("completion").to_string(),
                answer_number: v["answer_number"].as_f64().expect("answer_number"),
                // repr() of a Python float ("18.0", "1e+20", "inf") parses with Rust's f64 parser.
                pred: v["pred"]
                    .as_str()
                    .map(|s| s.parse::<f64>().expect("pred is a float repr")),
                correct: v["correct"].as_bool().expect("correct"),
            }
        })
        .collect()
}

#[test]
fn paper_extraction_matches_the_reference_on_every_corpus_line() {
    let cases = load_corpus();
    assert!(cases.len() >= 100, "corpus has only {} cases", cases.len());
    let mut mismatches = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let pred = extract_paper(&case.completion);
        let same_pred = match (pred, case.pred) {
            (Some(a), Some(b)) => a.to_bits() == b.to_bits(),
            (None, None) => true,
            _ => false,
        };
        let correct = is_correct(pred, case.answer_number);
        if !same_pred || correct != case.correct {
            mismatches.push(format!(
                "line {}: {:?}: rust {:?}/{} python {:?}/{}",
                i + 1,
                case.completion,
                pred,
                correct,
                case.pred,
                case.correct
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn corpus_exercises_the_quirks_it_claims_to() {
    let cases = load_corpus();
    let has = |pat: &str| cases.iter().any(|c| c.completion.contains(pat));
    for pat in [",", "-", ".", "１", "答え", "𝟓"] {
        assert!(has(pat), "corpus lacks a completion containing {pat:?}");
    }
    assert!(
        cases.iter().any(|c| c.pred.is_none()),
        "corpus lacks a no-number completion"
    );
    assert!(cases.iter().filter(|c| c.correct).count() >= 20);
    assert!(cases.iter().filter(|c| !c.correct).count() >= 20);
}

#[test]
fn score_jsonl_gives_the_reference_results_line_by_line() {
    let cases = load_corpus();
    let input: String = cases
        .iter()
        .map(|c| {
            serde_json::json!({"completion": c.completion, "answer_number": c.answer_number})
                .to_string()
                + "\n"
        })
        .collect();
    let mut out = Vec::new();
    let totals = score_jsonl(input.as_bytes(), &mut out, ExtractionMode::Paper).expect("scores");
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("output line is JSON"))
        .collect();
    assert_eq!(lines.len(), cases.len());
    for (line, case) in lines.iter().zip(&cases) {
        assert_eq!(
            line["correct"].as_bool(),
            Some(case.correct),
            "{:?}",
            case.completion
        );
        match case.pred {
            Some(p) if p.is_finite() => assert_eq!(line["pred"].as_f64(), Some(p)),
            _ => assert!(line["pred"].is_null()),
        }
    }
    let expected_correct = cases.iter().filter(|c| c.correct).count();
    assert_eq!(totals.correct, expected_correct);
    assert_eq!(totals.items, cases.len());
}
