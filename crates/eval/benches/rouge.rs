//! ROUGE scoring throughput on the committed 500-pair set (crates/eval/bench/rouge_pairs_500.jsonl),
//! the same work the Python reference does in crates/eval/bench/rouge_python.py: the paper's
//! tokenizer (emoji removal, neologdn, MeCab/UniDic-lite) plus ROUGE-1/2/L per pair, then the
//! bootstrap aggregate. Single-threaded, like the reference.
//!
//! Run: `eval "$(bash scripts/fetch-assets.sh)"; cargo bench -p evomerge-eval --bench rouge`

use std::path::PathBuf;
use std::time::Instant;

use evomerge_eval::ja::JaTokenizer;
use evomerge_eval::rouge::{aggregate, NumpyRandomState, RougeJa};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/rouge_pairs_500.jsonl");
    let text = std::fs::read_to_string(&path)?;
    let mut pairs = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let field = |k: &str| {
            v[k].as_str()
                .map(str::to_owned)
                .ok_or(format!("missing {k}"))
        };
        pairs.push((field("reference")?, field("prediction")?));
    }
    let start = Instant::now();
    let rouge = RougeJa::new(JaTokenizer::from_env()?);
    println!("dictionary load: {:.3} s", start.elapsed().as_secs_f64());

    // Warm the page cache and the branch predictors once, then time whole passes.
    let _ = rouge.score_pairs(&pairs);
    let rounds = 20;
    let start = Instant::now();
    let mut tokens = 0usize;
    for _ in 0..rounds {
        for (r, p) in &pairs {
            tokens += rouge.tokenizer().tokenize(r).len() + rouge.tokenizer().tokenize(p).len();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "tokenize only: {:.0} items/s ({tokens} tokens in {secs:.3} s)",
        (rounds * pairs.len()) as f64 / secs
    );
    let start = Instant::now();
    let mut checksum = 0.0;
    for _ in 0..rounds {
        let items = rouge.score_pairs(&pairs);
        checksum += items.iter().map(|i| i.rouge_l.fmeasure).sum::<f64>();
    }
    let secs = start.elapsed().as_secs_f64();
    let items = (rounds * pairs.len()) as f64;
    println!("tokenize + rouge1/2/L: {:.0} items/s ({} items x {rounds} rounds in {secs:.3} s; checksum {checksum:.6})", items / secs, pairs.len());

    let start = Instant::now();
    for _ in 0..rounds {
        let items = rouge.score_pairs(&pairs);
        let mut rng = NumpyRandomState::seed(42);
        let summary = aggregate(&items, &mut rng);
        checksum += summary.rouge_l.mid;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("... plus bootstrap aggregate (rouge_ja): {:.0} items/s ({secs:.3} s; checksum {checksum:.6})", items / secs);
    Ok(())
}
