//! Generation throughput on a synthetic Mistral-shaped model with random f32 weights (hidden 768, 12 layers,
//! intermediate 2048, 12 query / 4 key-value heads, vocab 32000, untied head: 124.7 M parameters), on the CPU.
//!
//! Prefill: tokens/s over `PROMPT_LEN`-token prompts. Decode: tokens/s over `NEW_TOKENS` greedy steps after the
//! prefill (timed as `generate(1 + NEW_TOKENS)` minus `generate(1)`, so the sampling loop, cache growth and
//! argmax are included). Batch 1 and batch 16. Each figure is the best of `REPEATS` runs.
//!
//!     RAYON_NUM_THREADS=2 cargo bench -p evomerge-mistral --bench generate
//!
//! The Python side, same shapes and method: `crates/mistral/bench/transformers_side_by_side.py`.
//! `EVOMERGE_BENCH_QUICK=1` shrinks the model and run lengths to check the program itself quickly;
//! `EVOMERGE_BENCH_BATCHES=1` picks batch sizes and `EVOMERGE_BENCH_PREFILL_ONLY=1` skips decoding (for profiling).

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use evomerge_mistral::generation::{generate, GenerationConfig, PromptInput};
use evomerge_mistral::weights::{LoadOptions, TensorSource};
use evomerge_mistral::{Config, Mistral};

struct Shape {
    hidden: usize,
    layers: usize,
    intermediate: usize,
    heads: usize,
    kv_heads: usize,
    vocab: usize,
    prompt_len: usize,
    new_tokens: usize,
    repeats: usize,
}

/// Random weights, made on first request (normal, std 0.02 like transformers' init; norms at 1).
struct RandomWeights {
    shapes: HashMap<String, Vec<usize>>,
}

impl TensorSource for RandomWeights {
    fn tensor(
        &self,
        name: &str,
        device: &Device,
    ) -> evomerge_mistral::error::Result<Option<Tensor>> {
        let Some(shape) = self.shapes.get(name) else {
            return Ok(None);
        };
        let t = if name.ends_with("norm.weight") {
            Tensor::ones(shape.as_slice(), DType::F32, device)?
        } else {
            Tensor::randn(0f32, 0.02, shape.as_slice(), device)?
        };
        Ok(Some(t))
    }
}

fn build(shape: &Shape) -> Result<Mistral, Box<dyn std::error::Error>> {
    let head_dim = shape.hidden / shape.heads;
    let config = Config::from_json(&serde_json::json!({
        "model_type": "mistral",
        "vocab_size": shape.vocab,
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "head_dim": head_dim,
        "max_position_embeddings": 4096,
        "rope_theta": 1_000_000.0,
        "rms_norm_eps": 1e-5,
        "sliding_window": null,
        "tie_word_embeddings": false,
        "torch_dtype": "float32",
    }))?;
    let (h, kv) = (shape.hidden, shape.kv_heads * head_dim);
    let mut shapes = HashMap::new();
    shapes.insert(
        "model.embed_tokens.weight".to_string(),
        vec![shape.vocab, h],
    );
    shapes.insert("lm_head.weight".to_string(), vec![shape.vocab, h]);
    shapes.insert("model.norm.weight".to_string(), vec![h]);
    for i in 0..shape.layers {
        let p = format!("model.layers.{i}");
        for (name, dims) in [
            ("self_attn.q_proj.weight", vec![h, h]),
            ("self_attn.k_proj.weight", vec![kv, h]),
            ("self_attn.v_proj.weight", vec![kv, h]),
            ("self_attn.o_proj.weight", vec![h, h]),
            ("mlp.gate_proj.weight", vec![shape.intermediate, h]),
            ("mlp.up_proj.weight", vec![shape.intermediate, h]),
            ("mlp.down_proj.weight", vec![h, shape.intermediate]),
            ("input_layernorm.weight", vec![h]),
            ("post_attention_layernorm.weight", vec![h]),
        ] {
            shapes.insert(format!("{p}.{name}"), dims);
        }
    }
    let params: usize = shapes.values().map(|d| d.iter().product::<usize>()).sum();
    println!(
        "synthetic model: {:.1} M parameters, f32, CPU, {} threads",
        params as f64 / 1e6,
        candle_core::utils::get_num_threads()
    );
    Ok(Mistral::load(
        &config,
        &RandomWeights { shapes },
        &LoadOptions::default(),
    )?)
}

fn prompts(batch: usize, shape: &Shape) -> Vec<PromptInput> {
    // Deterministic, varied ids (no padding: every prompt has PROMPT_LEN tokens).
    (0..batch)
        .map(|b| {
            PromptInput::Tokens(
                (0..shape.prompt_len)
                    .map(|i| ((b * 7919 + i * 104_729 + 1) % (shape.vocab - 3) + 3) as u32)
                    .collect(),
            )
        })
        .collect()
}

/// Best wall seconds and best CPU seconds (all threads) of `repeats` runs. CPU time tells changes apart on a
/// busy machine, where wall time mostly measures waiting.
fn best_secs(repeats: usize, mut f: impl FnMut()) -> (f64, f64) {
    (0..repeats)
        .map(|_| {
            let (t, cpu) = (Instant::now(), cpu_secs());
            f();
            (t.elapsed().as_secs_f64(), cpu_secs() - cpu)
        })
        .fold((f64::INFINITY, f64::INFINITY), |(w, c), (w2, c2)| {
            (w.min(w2), c.min(c2))
        })
}

/// CPU seconds of all this process's threads so far (Linux `schedstat`; 0 elsewhere).
fn cpu_secs() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum();
    ns as f64 / 1e9
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::var_os("EVOMERGE_BENCH_QUICK").is_some();
    let shape = if quick {
        Shape {
            hidden: 128,
            layers: 2,
            intermediate: 256,
            heads: 4,
            kv_heads: 2,
            vocab: 1000,
            prompt_len: 16,
            new_tokens: 4,
            repeats: 1,
        }
    } else {
        Shape {
            hidden: 768,
            layers: 12,
            intermediate: 2048,
            heads: 12,
            kv_heads: 4,
            vocab: 32000,
            prompt_len: 128,
            new_tokens: 32,
            repeats: 3,
        }
    };
    let model = build(&shape)?;
    println!(
        "prompt {} tokens, decode {} tokens, best of {}",
        shape.prompt_len, shape.new_tokens, shape.repeats
    );
    println!(
        "{:>6} {:>16} {:>16}",
        "batch", "prefill tok/s", "decode tok/s"
    );
    // `EVOMERGE_BENCH_BATCHES=1` (comma-separated) runs only some batch sizes, e.g. under a profiler.
    let batches: Vec<usize> = match std::env::var("EVOMERGE_BENCH_BATCHES") {
        Ok(list) => list
            .split(',')
            .map(|b| b.trim().parse())
            .collect::<Result<_, _>>()?,
        Err(_) => vec![1, 16],
    };
    for batch in batches {
        let prompts = prompts(batch, &shape);
        let run = |new: usize| {
            let config = GenerationConfig {
                max_new_tokens: new,
                ..GenerationConfig::default()
            };
            let out = generate(&model, &prompts, &config, None).expect("generation runs");
            assert!(out.iter().all(|c| c.tokens.len() == new));
        };
        run(2); // warm-up: page in weights, grow allocator pools
        let (prefill, prefill_cpu) = best_secs(shape.repeats, || run(1));
        if std::env::var_os("EVOMERGE_BENCH_PREFILL_ONLY").is_some() {
            let prefill_tps = (batch * shape.prompt_len) as f64 / prefill;
            println!("{batch:>6} {prefill_tps:>16.1} {:>16}", "-");
            continue;
        }
        let (full, full_cpu) = best_secs(shape.repeats, || run(1 + shape.new_tokens));
        let prefill_tps = (batch * shape.prompt_len) as f64 / prefill;
        let decode_tps = (batch * shape.new_tokens) as f64 / (full - prefill).max(1e-9);
        println!("{batch:>6} {prefill_tps:>16.1} {decode_tps:>16.1}");
        println!(
            "{}",
            serde_json::json!({"impl": "evomerge", "batch": batch, "prefill_tok_s": prefill_tps, "decode_tok_s": decode_tps,
                               "prefill_s": prefill, "full_s": full,
                               "prefill_cpu_s": prefill_cpu, "full_cpu_s": full_cpu})
        );
    }
    Ok(())
}
