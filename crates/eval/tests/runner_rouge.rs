//! The VQA runner with the paper's scorer (`PaperRouge`: MeCab/UniDic-lite words, bootstrap seeded 42)
//! reproduces the Python reference's aggregates on the committed eval-ja corpus
//! (`tests/fixtures/eval-ja/rouge_ja_corpus.json`, made with fugashi + unidic-lite + neologdn + emoji +
//! rouge_score). Needs the UniDic-lite dictionary (`scripts/fetch-assets.sh`); fails without it.

use std::collections::HashMap;
use std::path::PathBuf;

use evomerge_eval::generator::{Completion, GenerationSettings, Generator, GeneratorError, Prompt};
use evomerge_eval::ja::JaTokenizer;
use evomerge_eval::runner::{run_vqa, PaperRouge, VqaMetric, VqaQuestion, VqaRunConfig};

fn corpus() -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/eval-ja/rouge_ja_corpus.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("corpus is readable"))
        .expect("corpus is JSON")
}

fn tokenizer() -> JaTokenizer {
    JaTokenizer::from_env().unwrap_or_else(|e| panic!("{e}"))
}

/// Answers prompt `…q{i} [/INST]` with the i-th prediction.
struct Replay(Vec<String>);

impl Generator for Replay {
    fn generate(
        &mut self,
        prompts: &[Prompt],
        _: &GenerationSettings,
    ) -> Result<Vec<Completion>, GeneratorError> {
        prompts
            .iter()
            .enumerate()
            .map(|(index, p)| {
                let i: usize = p
                    .text
                    .rsplit_once("\nq")
                    .and_then(|(_, rest)| rest.strip_suffix(" [/INST]"))
                    .and_then(|n| n.parse().ok())
                    .ok_or(GeneratorError::BadPrompt {
                        index,
                        message: p.text.clone(),
                    })?;
                Ok(Completion {
                    text: self.0[i].clone(),
                    new_tokens: 1,
                    hit_max_new_tokens: false,
                })
            })
            .collect()
    }
}

fn interval(v: &serde_json::Value) -> (f64, f64, f64) {
    (
        v["low"].as_f64().unwrap(),
        v["mid"].as_f64().unwrap(),
        v["high"].as_f64().unwrap(),
    )
}

#[test]
fn vqa_runner_scores_match_the_python_reference() {
    let corpus = corpus();
    let pairs = corpus["pairs"].as_array().unwrap();
    let references: Vec<String> = pairs
        .iter()
        .map(|p| p["reference"].as_str().unwrap().to_string())
        .collect();
    let predictions: Vec<String> = pairs
        .iter()
        .map(|p| p["prediction"].as_str().unwrap().to_string())
        .collect();
    let questions: Vec<VqaQuestion> = references
        .iter()
        .enumerate()
        .map(|(i, r)| VqaQuestion {
            index: i,
            question: format!("q{i}"),
            answer: r.clone(),
            image: vec![0],
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut config = VqaRunConfig::paper("rouge-corpus");
    config.batch_size = 16;
    let metric = PaperRouge::new(tokenizer());
    let output = run_vqa(
        &mut Replay(predictions.clone()),
        &questions,
        &[],
        &metric,
        None,
        &config,
        &mut |_, _| {},
    )
    .unwrap();
    output.write(dir.path()).unwrap();
    let summary = &output.summary;
    // The runner strips predictions (as the reference's VQA wrapper does); surrounding whitespace never
    // changes the word segmentation, so the aggregates equal the reference's.
    for name in ["rouge1", "rouge2", "rougeL"] {
        let (low, mid, high) = interval(&corpus["aggregate"][name]);
        assert_eq!(summary.metrics[name], mid, "{name} bootstrap mid");
        assert_eq!(summary.metrics[&format!("{name}_low")], low, "{name} low");
        assert_eq!(
            summary.metrics[&format!("{name}_high")],
            high,
            "{name} high"
        );
    }
    let mean = corpus["mean"]["rougeL"].as_f64().unwrap();
    assert!((summary.metrics["rougeL_mean"] - mean).abs() < 1e-9);
    assert_eq!(summary.tokenizer, "mecab-unidic-lite");
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(dir.path().join("predictions.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    for (line, pair) in lines.iter().zip(pairs) {
        let want = pair["rougeL"][2].as_f64().unwrap() * 100.0;
        assert_eq!(
            line["rougeL"].as_f64().unwrap(),
            want,
            "{}",
            pair["prediction"]
        );
    }
}

#[test]
fn paper_rouge_ja_pass_draws_from_the_same_stream_as_the_reference() {
    let corpus = corpus();
    let p_ja: HashMap<&str, f64> = corpus["strings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["text"].as_str().unwrap(), s["p_ja"].as_f64().unwrap()))
        .collect();
    let pairs = corpus["pairs"].as_array().unwrap();
    let references: Vec<String> = pairs
        .iter()
        .map(|p| p["reference"].as_str().unwrap().to_string())
        .collect();
    let predictions: Vec<String> = pairs
        .iter()
        .map(|p| p["prediction"].as_str().unwrap().to_string())
        .collect();
    // The reference's rule: a Japanese reference (p >= 0.5) answered by a non-Japanese prediction (p < 0.5)
    // is scored against "".
    let predictions_ja: Vec<String> = references
        .iter()
        .zip(&predictions)
        .map(|(r, p)| {
            if p_ja[r.as_str()] >= 0.5 && p_ja[p.as_str()] < 0.5 {
                String::new()
            } else {
                p.clone()
            }
        })
        .collect();
    let emptied = predictions_ja
        .iter()
        .zip(&predictions)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(
        emptied as u64,
        corpus["replaced_by_empty_in_ja_pass"].as_u64().unwrap()
    );
    let scores = PaperRouge::new(tokenizer())
        .compute(&references, &predictions, Some(&predictions_ja))
        .unwrap();
    for name in ["rouge1", "rouge2", "rougeL"] {
        assert_eq!(
            scores.metrics[name],
            interval(&corpus["aggregate"][name]).1,
            "{name}"
        );
        assert_eq!(
            scores.metrics[&format!("{name}_ja")],
            interval(&corpus["aggregate_ja"][name]).1,
            "{name}_ja"
        );
    }
}
