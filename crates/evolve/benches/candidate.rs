//! Per-candidate cost of a search: merging a candidate into the live model against scoring it.
//! Writes a synthetic Mistral-shaped model set (base + 2 fine-tunes, bf16, a word-level tokenizer),
//! runs a real `evolve` search for a few trials on a 100-item task, and prints the median merge
//! seconds (merge into the live model's storage) and evaluation seconds per trial, from the journal.
//!
//!     cargo bench -p evomerge-evolve --bench candidate -- 135m     # SmolLM-135M's shape
//!     cargo bench -p evomerge-evolve --bench candidate -- 1b       # TinyLlama-1.1B's shape
//!     cargo bench -p evomerge-evolve --bench candidate -- 135m --metric loglik
//!
//! Options: `--trials N` (default 4), `--metric exact|loglik` (default exact: greedy generation of
//! up to `--new-tokens` tokens, default 32), `--dtype float32|bfloat16` (live model; default float32:
//! bf16 matrix products are slow on CPUs). Models go to `$EVOMERGE_BENCH_DIR` (default
//! `/tmp/evomerge-bench-candidate`) and are reused.

use std::path::{Path, PathBuf};

use evomerge_checkpoint::{encode_from_f32, CheckpointWriter, Dtype, TensorPlan, WriteOptions};
use evomerge_evolve::{Journal, SearchOptions};
use evomerge_merge::sparsify::mix64;
use rayon::prelude::*;
use serde_json::json;

struct Shape {
    name: &'static str,
    hidden: usize,
    intermediate: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    vocab: usize,
}

const SHAPES: [Shape; 2] = [
    Shape { name: "135m", hidden: 576, intermediate: 1536, layers: 30, heads: 9, kv_heads: 3, vocab: 49152 },
    Shape { name: "1b", hidden: 2048, intermediate: 5632, layers: 22, heads: 32, kv_heads: 4, vocab: 32000 },
];

fn tensor_plan(s: &Shape) -> Vec<TensorPlan> {
    let hd = s.hidden / s.heads;
    let mut plan = vec![TensorPlan::new("model.embed_tokens.weight", Dtype::BF16, vec![s.vocab, s.hidden])];
    for l in 0..s.layers {
        let p = |name: &str, shape: Vec<usize>| TensorPlan::new(format!("model.layers.{l}.{name}"), Dtype::BF16, shape);
        plan.push(p("input_layernorm.weight", vec![s.hidden]));
        plan.push(p("self_attn.q_proj.weight", vec![s.heads * hd, s.hidden]));
        plan.push(p("self_attn.k_proj.weight", vec![s.kv_heads * hd, s.hidden]));
        plan.push(p("self_attn.v_proj.weight", vec![s.kv_heads * hd, s.hidden]));
        plan.push(p("self_attn.o_proj.weight", vec![s.hidden, s.heads * hd]));
        plan.push(p("post_attention_layernorm.weight", vec![s.hidden]));
        plan.push(p("mlp.gate_proj.weight", vec![s.intermediate, s.hidden]));
        plan.push(p("mlp.up_proj.weight", vec![s.intermediate, s.hidden]));
        plan.push(p("mlp.down_proj.weight", vec![s.hidden, s.intermediate]));
    }
    plan.push(TensorPlan::new("model.norm.weight", Dtype::BF16, vec![s.hidden]));
    plan.push(TensorPlan::new("lm_head.weight", Dtype::BF16, vec![s.vocab, s.hidden]));
    plan
}

fn unit(key: u64, i: usize) -> f32 {
    (mix64(key ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

/// A word-level tokenizer over `w0 … w{vocab-1}` (w0 unknown, w1 BOS, w2 EOS).
fn tokenizer_json(vocab: usize) -> serde_json::Value {
    let words: serde_json::Map<String, serde_json::Value> = (0..vocab).map(|i| (format!("w{i}"), json!(i))).collect();
    json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [
            {"id": 0, "content": "w0", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 1, "content": "w1", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 2, "content": "w2", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
        ],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": false},
        "model": {"type": "WordLevel", "vocab": words, "unk_token": "w0"}
    })
}

fn generate_models(dir: &Path, s: &Shape) {
    let config = json!({
        "architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": s.hidden,
        "intermediate_size": s.intermediate, "num_hidden_layers": s.layers, "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads, "head_dim": s.hidden / s.heads, "vocab_size": s.vocab, "hidden_act": "silu",
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "sliding_window": null,
        "tie_word_embeddings": false, "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2
    });
    for (m, name) in ["base", "ft1", "ft2"].iter().enumerate() {
        let out = dir.join(name);
        if out.join("config.json").exists() {
            continue;
        }
        let plan = tensor_plan(s);
        let writer = CheckpointWriter::create(&out, plan.clone(), WriteOptions { force: true, ..Default::default() })
            .expect("create bench model");
        for (t, p) in plan.iter().enumerate() {
            let (kb, kn) = (mix64(t as u64 + 1), mix64(((m as u64) << 32) ^ (t as u64 + 7)));
            let norm = p.name.ends_with("norm.weight");
            let values: Vec<f32> = (0..p.numel())
                .into_par_iter()
                .map(|i| {
                    let b = if norm { 1.0 + 0.05 * unit(kb, i) } else { 0.02 * unit(kb, i) };
                    if m == 0 { b } else { b + 0.002 * unit(kn, i) }
                })
                .collect();
            let mut bytes = vec![0u8; values.len() * 2];
            encode_from_f32(Dtype::BF16, &values, &mut bytes);
            writer.write_tensor(&p.name, &bytes).expect("write bench tensor");
        }
        let tmp_files = dir.join(format!("files-{name}"));
        std::fs::create_dir_all(&tmp_files).expect("files dir");
        std::fs::write(tmp_files.join("tokenizer.json"), tokenizer_json(s.vocab).to_string()).expect("tokenizer");
        std::fs::write(
            tmp_files.join("tokenizer_config.json"),
            json!({"bos_token": "w1", "eos_token": "w2", "add_bos_token": true, "add_eos_token": false}).to_string(),
        )
        .expect("tokenizer config");
        std::fs::write(tmp_files.join("generation_config.json"), json!({"bos_token_id": 1, "eos_token_id": 2}).to_string())
            .expect("generation config");
        writer.finish(&config, Some(&tmp_files)).expect("finish bench model");
        eprintln!("wrote {}", out.display());
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn main() {
    let shape_name = std::env::args().skip(1).find(|a| SHAPES.iter().any(|s| s.name == a)).unwrap_or_else(|| "135m".into());
    let shape = SHAPES.iter().find(|s| s.name == shape_name).expect("shape");
    let trials: u64 = arg("--trials").and_then(|t| t.parse().ok()).unwrap_or(4);
    let metric = arg("--metric").unwrap_or_else(|| "exact".into());
    let new_tokens: usize = arg("--new-tokens").and_then(|t| t.parse().ok()).unwrap_or(32);
    let dtype = arg("--dtype").unwrap_or_else(|| "float32".into());
    let root = PathBuf::from(std::env::var("EVOMERGE_BENCH_DIR").unwrap_or_else(|_| "/tmp/evomerge-bench-candidate".into()));
    let dir = root.join(shape.name);
    std::fs::create_dir_all(&dir).expect("bench dir");
    generate_models(&dir, shape);

    // 100 items: 24-word prompts, 8-word references (the same for every metric).
    let mut task = String::new();
    for i in 0..100u64 {
        let word = |j: u64| format!("w{}", 3 + mix64(i * 1000 + j) % (shape.vocab as u64 - 3));
        let prompt: Vec<String> = (0..24).map(word).collect();
        let reference: Vec<String> = (100..108).map(word).collect();
        task.push_str(&json!({"prompt": prompt.join(" "), "reference": reference.join(" ")}).to_string());
        task.push('\n');
    }
    std::fs::write(dir.join("task.jsonl"), task).expect("task");
    let recipe = format!(
        "genome:\n  merge_method: dare_ties\n  base_model: base\n  models: [ft1, ft2]\n  parameters: [density, weight]\n  dtype: {dtype}\n\
         task:\n  kind: custom\n  data: task.jsonl\n  metric: {metric}\n  generation: {{max_new_tokens: {new_tokens}, batch_size: 16}}\n\
         optimizer: {{max_trials: {trials}, seed: 0}}\n"
    );
    let recipe_path = dir.join(format!("recipe-{metric}-{dtype}.yml"));
    std::fs::write(&recipe_path, recipe).expect("recipe");
    let out = dir.join(format!("run-{metric}-{dtype}"));
    let _ = std::fs::remove_dir_all(&out);
    let report = evomerge_evolve::run(&recipe_path, &SearchOptions::new(out.clone()))
        .expect("search");
    let records = Journal::open_existing(&out.join("journal.sqlite")).expect("journal").trials().expect("trials");
    // The first trial also pays for warming caches; report the median of the rest where there is one.
    let steady: Vec<_> = if records.len() > 1 { records[1..].to_vec() } else { records.clone() };
    let merge = median(steady.iter().filter_map(|r| r.merge_seconds).collect());
    let eval = median(steady.iter().filter_map(|r| Some(r.seconds? - r.merge_seconds?)).collect());
    let tokens = median(steady.iter().filter_map(|r| r.generated_tokens.map(|t| t as f64)).collect());
    let params: usize = tensor_plan(shape).iter().map(|p| p.numel()).sum();
    println!(
        "{} ({:.0} M params, 3 bf16 sources, live {dtype}), {} trials, metric {metric}: merge into live model {:.3} s, \
         evaluation of 100 items {:.2} s ({tokens:.0} tokens generated), merge = {:.1} % of evaluation; whole run {:.1} s",
        shape.name,
        params as f64 / 1e6,
        records.len(),
        merge,
        eval,
        100.0 * merge / eval,
        report.seconds
    );
}
