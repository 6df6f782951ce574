//! Segmentation and ROUGE parity with the paper's Python stack (fugashi 1.3.1 + unidic-lite 1.0.8 +
//! neologdn 0.5.2 + emoji 2.10.1 + rouge_score 0.1.2, numpy seed 42) on the committed corpus.
//! Needs the UniDic-lite dictionary (scripts/fetch-assets.sh); fails, never skips, without it.

mod ja_common;

use std::collections::HashMap;

use evomerge_eval::ja::{normalize_answer, JaTokenizer};
use evomerge_eval::rouge::{
    self, compute_score, score_tokens, ItemScores, NumpyRandomState, RougeJa, Score,
};

fn tokenizer() -> JaTokenizer {
    JaTokenizer::from_env().unwrap_or_else(|e| panic!("{e}"))
}

fn as_array(s: &Score) -> [f64; 3] {
    [s.precision, s.recall, s.fmeasure]
}

#[test]
fn normalization_matches_neologdn_and_emoji_on_every_string() {
    let corpus = ja_common::corpus();
    let bad: Vec<_> = corpus
        .strings
        .iter()
        .filter(|s| normalize_answer(&s.text) != s.normalized)
        .collect();
    for s in bad.iter().take(5) {
        eprintln!(
            "MISMATCH {:?}: got {:?}, want {:?}",
            s.text,
            normalize_answer(&s.text),
            s.normalized
        );
    }
    assert!(
        bad.is_empty(),
        "{} of {} strings normalize differently",
        bad.len(),
        corpus.strings.len()
    );
}

#[test]
fn segmentation_matches_fugashi_on_every_string() {
    let corpus = ja_common::corpus();
    let tok = tokenizer();
    let mut mismatches = 0;
    for s in &corpus.strings {
        let got = tok.tokenize(&s.text);
        if got != s.tokens {
            mismatches += 1;
            if mismatches <= 5 {
                eprintln!(
                    "MISMATCH {:?}\n  rust  {:?}\n  mecab {:?}",
                    s.text, got, s.tokens
                );
            }
        }
    }
    let n = corpus.strings.len();
    println!(
        "segmentation identical to fugashi on {}/{} strings",
        n - mismatches,
        n
    );
    assert!(n >= 400);
    assert_eq!(
        mismatches, 0,
        "{mismatches} of {n} strings segment differently"
    );
}

#[test]
fn rouge_from_reference_tokens_is_bit_exact_with_rouge_score() {
    // Independent of the dictionary: score the fixture's own token lists.
    let corpus = ja_common::corpus();
    let tokens: HashMap<&str, &Vec<String>> = corpus
        .strings
        .iter()
        .map(|s| (s.text.as_str(), &s.tokens))
        .collect();
    let items: Vec<ItemScores> = corpus
        .pairs
        .iter()
        .map(|p| score_tokens(tokens[p.reference.as_str()], tokens[p.prediction.as_str()]))
        .collect();
    for (item, want) in items.iter().zip(&corpus.pairs) {
        assert_eq!(
            as_array(&item.rouge1),
            want.rouge1,
            "rouge1 of {:?}",
            want.reference
        );
        assert_eq!(
            as_array(&item.rouge2),
            want.rouge2,
            "rouge2 of {:?}",
            want.reference
        );
        assert_eq!(
            as_array(&item.rouge_l),
            want.rouge_l,
            "rougeL of {:?}",
            want.reference
        );
    }
    let mut rng = NumpyRandomState::seed(42);
    let summary = rouge::aggregate(&items, &mut rng);
    assert_eq!(summary.rouge1.mid, corpus.aggregate.rouge1.mid);
    assert_eq!(summary.rouge2.low, corpus.aggregate.rouge2.low);
    assert_eq!(summary.rouge_l.mid, corpus.aggregate.rouge_l.mid);
    assert_eq!(summary.rouge_l.high, corpus.aggregate.rouge_l.high);
    assert!((summary.rouge_l.mean - corpus.mean.rouge_l).abs() < 1e-9);
}

#[test]
fn compute_score_end_to_end_matches_the_paper_bit_for_bit() {
    let corpus = ja_common::corpus();
    let rouge = RougeJa::new(tokenizer());
    let pairs: Vec<(&str, &str)> = corpus
        .pairs
        .iter()
        .map(|p| (p.reference.as_str(), p.prediction.as_str()))
        .collect();
    // fastText probabilities recorded by the generator (the Rust fastText port is checked in ja_lid.rs).
    let p_ja: HashMap<&str, f32> = corpus
        .strings
        .iter()
        .map(|s| (s.text.as_str(), s.p_ja))
        .collect();
    let lookup = |t: &str| p_ja[t];
    let mut rng = NumpyRandomState::seed(42);
    let report = compute_score(&rouge, &pairs, Some(&lookup), &mut rng);
    assert_eq!(
        rouge.score_pairs_parallel(&pairs, 3),
        report.items,
        "threads change nothing"
    );
    for (item, want) in report.items.iter().zip(&corpus.pairs) {
        assert_eq!(
            as_array(&item.rouge_l),
            want.rouge_l,
            "rougeL of {:?} / {:?}",
            want.reference,
            want.prediction
        );
        assert_eq!(as_array(&item.rouge1), want.rouge1);
        assert_eq!(as_array(&item.rouge2), want.rouge2);
    }
    let check = |got: &rouge::TypeSummary, want: &ja_common::Interval, what: &str| {
        assert_eq!(
            (got.low, got.mid, got.high),
            (want.low, want.mid, want.high),
            "{what}"
        );
    };
    let s = &report.summary;
    check(&s.rouge1, &corpus.aggregate.rouge1, "rouge1");
    check(&s.rouge2, &corpus.aggregate.rouge2, "rouge2");
    check(&s.rouge_l, &corpus.aggregate.rouge_l, "rougeL");
    let ja = report.summary_ja.expect("a _ja pass was requested");
    check(&ja.rouge1, &corpus.aggregate_ja.rouge1, "rouge1_ja");
    check(&ja.rouge2, &corpus.aggregate_ja.rouge2, "rouge2_ja");
    check(&ja.rouge_l, &corpus.aggregate_ja.rouge_l, "rougeL_ja");
    println!(
        "rougeL mean {:.4} (python {:.4}), bootstrap mid {:.4} (python {:.4}); rougeL_ja mid {:.4}",
        s.rouge_l.mean,
        corpus.mean.rouge_l,
        s.rouge_l.mid,
        corpus.aggregate.rouge_l.mid,
        ja.rouge_l.mid
    );
    assert!((s.rouge_l.mean - corpus.mean.rouge_l).abs() < 1e-9);
}

#[derive(serde::Deserialize)]
struct RawRow {
    text: String,
    tokens: Vec<String>,
}

#[derive(serde::Deserialize)]
struct RawCorpus {
    strings: Vec<RawRow>,
}

/// MeCab on unnormalized text (spaces, CR/LF, U+3000, emoji, long runs, a string longer than the
/// 65 535-byte lookup window) equals fugashi's `parse(text).split()`.
#[test]
fn raw_wakati_matches_fugashi() {
    let path = ja_common::fixture_dir().join("mecab_raw.json");
    let corpus: RawCorpus =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("JSON");
    let tok = tokenizer();
    let mut mismatches = 0;
    for row in &corpus.strings {
        let joined = tok.wakati(&row.text).join(" ");
        let got: Vec<&str> = evomerge_eval::ja::python_split(&joined);
        if got != row.tokens {
            mismatches += 1;
            if mismatches <= 5 {
                eprintln!(
                    "MISMATCH {:?}\n  rust  {:?}\n  mecab {:?}",
                    row.text.chars().take(80).collect::<String>(),
                    &got[..got.len().min(20)],
                    &row.tokens[..row.tokens.len().min(20)]
                );
            }
        }
    }
    assert!(corpus.strings.iter().any(|r| r.text.len() > 65535));
    assert_eq!(
        mismatches,
        0,
        "{mismatches} of {} raw strings segment differently",
        corpus.strings.len()
    );
}
