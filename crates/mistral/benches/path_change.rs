//! Per-candidate cost of a data-flow-space candidate: setting a new layer path on a live pool model
//! (what `evomerge evolve` with a `dfs:` section does) against building the candidate by copying its
//! layers into a new model (what a search that writes each path as a passthrough merge and loads it
//! would pay at the least: the copies and the load, no disk).
//!
//! The pool: two synthetic Mistral-shaped models (hidden 1024, 16 layers each, intermediate 2816,
//! 16 query / 8 key-value heads, vocab 32000, random f32 weights), 32 pool layers; the candidate path
//! has 21 hops drawn from both models, four layers twice. Figures are medians.
//!
//!     RAYON_NUM_THREADS=2 cargo bench -p evomerge-mistral --bench path_change
//!
//! `EVOMERGE_BENCH_QUICK=1` shrinks the models to check the program itself quickly.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use evomerge_mistral::weights::LoadOptions;
use evomerge_mistral::{Config, Hop, LayerPath, Mistral, ScaleConvention};

const LAYER_TENSORS: [&str; 9] = [
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
];

fn config(hidden: usize, layers: usize, intermediate: usize, vocab: usize) -> serde_json::Value {
    serde_json::json!({
        "model_type": "mistral", "vocab_size": vocab, "hidden_size": hidden,
        "intermediate_size": intermediate, "num_hidden_layers": layers,
        "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": hidden / 16,
        "max_position_embeddings": 4096, "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-5,
        "sliding_window": null, "tie_word_embeddings": false, "torch_dtype": "float32",
    })
}

fn random_model(
    json: &serde_json::Value,
) -> Result<(Mistral, HashMap<String, Tensor>), Box<dyn std::error::Error>> {
    let c = Config::from_json(json)?;
    let dev = Device::Cpu;
    let (h, kv, i) = (
        c.hidden_size,
        c.num_key_value_heads * c.head_dim,
        c.intermediate_size,
    );
    let mut w = HashMap::new();
    w.insert(
        "model.embed_tokens.weight".into(),
        Tensor::randn(0f32, 0.02, (c.vocab_size, h), &dev)?,
    );
    w.insert(
        "lm_head.weight".into(),
        Tensor::randn(0f32, 0.02, (c.vocab_size, h), &dev)?,
    );
    w.insert(
        "model.norm.weight".into(),
        Tensor::ones(h, DType::F32, &dev)?,
    );
    for l in 0..c.num_hidden_layers {
        let dims: [&[usize]; 9] = [
            &[h, h],
            &[kv, h],
            &[kv, h],
            &[h, h],
            &[i, h],
            &[i, h],
            &[h, i],
            &[h],
            &[h],
        ];
        for (name, d) in LAYER_TENSORS.iter().zip(dims) {
            let t = if d.len() == 1 {
                Tensor::ones(d, DType::F32, &dev)?
            } else {
                Tensor::randn(0f32, 0.02, d, &dev)?
            };
            w.insert(format!("model.layers.{l}.{name}"), t);
        }
    }
    let model = Mistral::load(&c, &w, &LoadOptions::default())?;
    Ok((model, w))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::var_os("EVOMERGE_BENCH_QUICK").is_some();
    let (hidden, layers, intermediate, vocab) = if quick {
        (128, 4, 352, 1000)
    } else {
        (1024, 16, 2816, 32000)
    };
    let json = config(hidden, layers, intermediate, vocab);
    let (a, a_weights) = random_model(&json)?;
    let (b, b_weights) = random_model(&json)?;
    let pool = a.with_pool(&[&b])?;
    drop(b);
    let m = 2 * layers;
    // A path over both models: a's first half, b's middle, a's layers again, a's last layer.
    let mut layers_of_path: Vec<usize> = (0..layers / 2).collect();
    layers_of_path.extend(layers + layers / 4..layers + 3 * layers / 4);
    layers_of_path.extend(layers / 4..layers / 2);
    layers_of_path.push(layers - 1);
    let hops: Vec<Hop> = layers_of_path
        .iter()
        .enumerate()
        .map(|(t, &layer)| Hop {
            layer,
            scale: 1.0 - 0.01 * t as f64,
        })
        .collect();
    let path = LayerPath::new(hops.clone(), ScaleConvention::ReleasedBranch)?;
    let params: usize = a_weights.values().map(|t| t.elem_count()).sum();
    println!(
        "pool: 2 x {:.1} M parameters (f32, {m} pool layers); candidate path: {} hops; {} threads",
        params as f64 / 1e6,
        path.len(),
        candle_core::utils::get_num_threads()
    );

    // 1. Set the path on the live pool model.
    let mut live = pool;
    let mut set = Vec::new();
    for k in 0..21 {
        let p = if k % 2 == 0 {
            path.clone()
        } else {
            LayerPath::identity(layers)
        };
        let t0 = Instant::now();
        live.set_path(p)?;
        set.push(t0.elapsed().as_secs_f64());
    }

    // 2. Copy the path's layers into a new model and load it.
    let repeats = if quick { 5 } else { 3 };
    let mut copied = Vec::new();
    let mut candidate = json.clone();
    candidate["num_hidden_layers"] = serde_json::json!(path.len());
    let candidate = Config::from_json(&candidate)?;
    for _ in 0..repeats {
        let t0 = Instant::now();
        let mut w: HashMap<String, Tensor> = HashMap::new();
        for name in [
            "model.embed_tokens.weight",
            "lm_head.weight",
            "model.norm.weight",
        ] {
            w.insert(name.into(), a_weights[name].clone());
        }
        for (k, hop) in path.hops().iter().enumerate() {
            let (source, l) = if hop.layer < layers {
                (&a_weights, hop.layer)
            } else {
                (&b_weights, hop.layer - layers)
            };
            for name in LAYER_TENSORS {
                w.insert(
                    format!("model.layers.{k}.{name}"),
                    source[&format!("model.layers.{l}.{name}")].copy()?,
                );
            }
        }
        let model = Mistral::load(&candidate, &w, &LoadOptions::default())?;
        copied.push(t0.elapsed().as_secs_f64());
        drop(model);
    }
    let (s, c) = (median(set), median(copied));
    println!("| per candidate | seconds |");
    println!("|---|---|");
    println!("| set the path on the live pool (evomerge) | {s:.2e} |");
    println!("| copy the path's layers into a new model and load it | {c:.3} |");
    println!("ratio: {:.0}x", c / s.max(1e-12));
    Ok(())
}
