//! Shared loading of the parity fixtures made by tests/fixtures/eval-ja/generate.py.
#![allow(dead_code)]

use std::path::PathBuf;

use serde::Deserialize;

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/eval-ja")
}

#[derive(Deserialize)]
pub struct StringRow {
    pub text: String,
    pub normalized: String,
    pub tokens: Vec<String>,
    pub p_ja: f32,
}

#[derive(Deserialize)]
pub struct PairRow {
    pub reference: String,
    pub prediction: String,
    pub rouge1: [f64; 3],
    pub rouge2: [f64; 3],
    #[serde(rename = "rougeL")]
    pub rouge_l: [f64; 3],
}

#[derive(Deserialize)]
pub struct Interval {
    pub low: f64,
    pub mid: f64,
    pub high: f64,
}

#[derive(Deserialize)]
pub struct Aggregate {
    pub rouge1: Interval,
    pub rouge2: Interval,
    #[serde(rename = "rougeL")]
    pub rouge_l: Interval,
}

#[derive(Deserialize)]
pub struct Means {
    pub rouge1: f64,
    pub rouge2: f64,
    #[serde(rename = "rougeL")]
    pub rouge_l: f64,
}

#[derive(Deserialize)]
pub struct Corpus {
    pub strings: Vec<StringRow>,
    pub pairs: Vec<PairRow>,
    pub aggregate: Aggregate,
    pub aggregate_ja: Aggregate,
    pub mean: Means,
}

pub fn corpus() -> Corpus {
    let path = fixture_dir().join("rouge_ja_corpus.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad fixture {}: {e}", path.display()))
}

#[derive(Deserialize)]
pub struct LidRow {
    pub text: String,
    pub n_labels: usize,
    pub top: Vec<(String, f32)>,
    pub p_ja: f32,
}

#[derive(Deserialize)]
pub struct LidCorpus {
    pub texts: Vec<LidRow>,
}

pub fn lid_corpus() -> LidCorpus {
    let path = fixture_dir().join("lid_corpus.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad fixture {}: {e}", path.display()))
}
