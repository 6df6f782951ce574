//! Merge throughput on a synthetic Mistral-shaped model set (3 models of ~1.1 B parameters in
//! bf16, TinyLlama's shape), merged with `ties` and `dare_ties`. Prints seconds, GB/s of tensor
//! data read, and peak RSS of each merge (each runs in its own child process so peaks are separate).
//!
//!     cargo bench -p evomerge-merge --bench merge                 # generate if needed, then both merges
//!     cargo bench -p evomerge-merge --bench merge -- generate     # only write the model set
//!     cargo bench -p evomerge-merge --bench merge -- ties         # only one merge
//!     cargo bench -p evomerge-merge --bench merge -- della        # also: breadcrumbs_ties, sce, model_stock,
//!                                                                 # nuslerp, multislerp, karcher, breadcrumbs,
//!                                                                 # della_linear, nearswap, arcee_fusion, ram,
//!                                                                 # ramplus_tl
//!
//! The model set (~6.6 GB) and the recipes are written once to `$EVOMERGE_BENCH_DIR`
//! (default `/tmp/evomerge-bench`) and reused; `bench/mergekit_side_by_side.sh` runs the same
//! recipes through mergekit. `EVOMERGE_BENCH_THREADS` sets the worker threads (default: all cores).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use evomerge_checkpoint::{encode_from_f32, CheckpointWriter, Dtype, TensorPlan, WriteOptions};
use evomerge_merge::sparsify::mix64;
use evomerge_merge::{merge_to_dir, MergeConfig, MergeOptions};
use rayon::prelude::*;
use serde_json::json;

const HIDDEN: usize = 2048;
const INTERMEDIATE: usize = 5632;
const LAYERS: usize = 22;
const VOCAB: usize = 32000;
const HEADS: usize = 32;
const KV_HEADS: usize = 4;
const HEAD_DIM: usize = HIDDEN / HEADS;

/// The merges, by name; with no argument the first two run (the others: name them).
const RECIPES: [(&str, &str); 15] = [
    (
        "ties",
        "models:\n  - model: ft1\n    parameters: {weight: 0.5, density: 0.5}\n  - model: ft2\n    parameters: {weight: 0.5, density: 0.5}\nmerge_method: ties\nbase_model: base\ndtype: bfloat16\n",
    ),
    (
        "dare_ties",
        "models:\n  - model: ft1\n    parameters: {weight: 0.5, density: 0.5}\n  - model: ft2\n    parameters: {weight: 0.5, density: 0.5}\nmerge_method: dare_ties\nbase_model: base\ndtype: bfloat16\n",
    ),
    (
        "breadcrumbs_ties",
        "models:\n  - model: ft1\n    parameters: {weight: 0.5, density: 0.5, gamma: 0.01}\n  - model: ft2\n    parameters: {weight: 0.5, density: 0.5, gamma: 0.01}\nmerge_method: breadcrumbs_ties\nbase_model: base\ndtype: bfloat16\n",
    ),
    (
        "della",
        "models:\n  - model: ft1\n    parameters: {weight: 0.5, density: 0.5, epsilon: 0.1}\n  - model: ft2\n    parameters: {weight: 0.5, density: 0.5, epsilon: 0.1}\nmerge_method: della\nbase_model: base\ndtype: bfloat16\n",
    ),
    (
        "sce",
        "models:\n  - model: ft1\n  - model: ft2\nmerge_method: sce\nbase_model: base\nparameters: {select_topk: 0.5}\ndtype: bfloat16\n",
    ),
    (
        "model_stock",
        "models:\n  - model: ft1\n  - model: ft2\nmerge_method: model_stock\nbase_model: base\ndtype: bfloat16\n",
    ),
    (
        "nuslerp",
        "models:\n  - model: ft1\n    parameters: {weight: 0.5}\n  - model: ft2\n    parameters: {weight: 0.5}\nmerge_method: nuslerp\nbase_model: base\ndtype: bfloat16\n",
    ),
    (
        "multislerp",
        "models:\n  - model: ft1\n    parameters: {weight: 0.5}\n  - model: ft2\n    parameters: {weight: 0.5}\nmerge_method: multislerp\nbase_model: base\ndtype: bfloat16\n",
    ),
    (
        "karcher",
        "models:\n  - model: ft1\n  - model: ft2\nmerge_method: karcher\ndtype: bfloat16\n",
    ),
    (
        "breadcrumbs",
        "models:\n  - model: ft1\n    parameters: {weight: 0.5, density: 0.9, gamma: 0.01}\n  - model: ft2\n    parameters: {weight: 0.5, density: 0.9, gamma: 0.01}\nmerge_method: breadcrumbs\nbase_model: base\ndtype: bfloat16\n",
    ),
    (
        "della_linear",
        "models:\n  - model: ft1\n    parameters: {weight: 0.5, density: 0.5, epsilon: 0.1}\n  - model: ft2\n    parameters: {weight: 0.5, density: 0.5, epsilon: 0.1}\nmerge_method: della_linear\nbase_model: base\ndtype: bfloat16\n",
    ),
    (
        "nearswap",
        "models:\n  - model: ft1\nmerge_method: nearswap\nbase_model: base\nparameters: {t: 0.001}\ndtype: bfloat16\n",
    ),
    (
        "arcee_fusion",
        "models:\n  - model: ft1\nmerge_method: arcee_fusion\nbase_model: base\ndtype: bfloat16\n",
    ),
    (
        "ram",
        "models:\n  - model: ft1\n  - model: ft2\nmerge_method: ram\nbase_model: base\nparameters: {epsilon: 0.001}\ndtype: bfloat16\n",
    ),
    (
        "ramplus_tl",
        "models:\n  - model: ft1\n  - model: ft2\nmerge_method: ramplus_tl\nbase_model: base\nparameters: {epsilon: 0.001}\ndtype: bfloat16\n",
    ),
];

fn tensor_plan() -> Vec<TensorPlan> {
    let mut plan = vec![TensorPlan::new("model.embed_tokens.weight", Dtype::BF16, vec![VOCAB, HIDDEN])];
    for l in 0..LAYERS {
        let p = |name: &str, shape: Vec<usize>| TensorPlan::new(format!("model.layers.{l}.{name}"), Dtype::BF16, shape);
        plan.push(p("input_layernorm.weight", vec![HIDDEN]));
        plan.push(p("self_attn.q_proj.weight", vec![HEADS * HEAD_DIM, HIDDEN]));
        plan.push(p("self_attn.k_proj.weight", vec![KV_HEADS * HEAD_DIM, HIDDEN]));
        plan.push(p("self_attn.v_proj.weight", vec![KV_HEADS * HEAD_DIM, HIDDEN]));
        plan.push(p("self_attn.o_proj.weight", vec![HIDDEN, HEADS * HEAD_DIM]));
        plan.push(p("post_attention_layernorm.weight", vec![HIDDEN]));
        plan.push(p("mlp.gate_proj.weight", vec![INTERMEDIATE, HIDDEN]));
        plan.push(p("mlp.up_proj.weight", vec![INTERMEDIATE, HIDDEN]));
        plan.push(p("mlp.down_proj.weight", vec![HIDDEN, INTERMEDIATE]));
    }
    plan.push(TensorPlan::new("model.norm.weight", Dtype::BF16, vec![HIDDEN]));
    plan.push(TensorPlan::new("lm_head.weight", Dtype::BF16, vec![VOCAB, HIDDEN]));
    plan
}

fn config() -> serde_json::Value {
    json!({
        "architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM, "vocab_size": VOCAB, "hidden_act": "silu",
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "sliding_window": null,
        "tie_word_embeddings": false, "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2
    })
}

/// Uniform in [-1, 1) from a counter (cheap, reproducible, parallel).
fn unit(key: u64, i: usize) -> f32 {
    (mix64(key ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

/// Writes `base`, `ft1`, `ft2` (fine-tunes = base + 10 % noise) unless already complete.
fn generate(dir: &Path) {
    for (m, name) in ["base", "ft1", "ft2"].iter().enumerate() {
        let out = dir.join(name);
        if out.join("config.json").exists() {
            continue;
        }
        let started = Instant::now();
        let plan = tensor_plan();
        let writer = CheckpointWriter::create(&out, plan.clone(), WriteOptions { force: true, ..Default::default() })
            .expect("create bench model");
        for (t, p) in plan.iter().enumerate() {
            let key_base = mix64(t as u64 + 1);
            let key_noise = mix64(((m as u64) << 32) ^ (t as u64 + 7));
            let norm = p.name.ends_with("norm.weight");
            let values: Vec<f32> = (0..p.numel())
                .into_par_iter()
                .map(|i| {
                    let b = if norm { 1.0 + 0.05 * unit(key_base, i) } else { 0.02 * unit(key_base, i) };
                    if m == 0 { b } else { b + 0.002 * unit(key_noise, i) }
                })
                .collect();
            let mut bytes = vec![0u8; values.len() * 2];
            encode_from_f32(Dtype::BF16, &values, &mut bytes);
            writer.write_tensor(&p.name, &bytes).expect("write bench tensor");
        }
        writer.finish(&config(), None).expect("finish bench model");
        eprintln!("wrote {} in {:.1}s", out.display(), started.elapsed().as_secs_f64());
    }
    for (name, text) in RECIPES {
        std::fs::write(dir.join(format!("{name}.yml")), text).expect("write recipe");
    }
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// User + system CPU seconds of this process so far (less sensitive than wall time to other load).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn run_merge(dir: &Path, recipe: &str) {
    // (Re)write the recipe, so a merge added since the model set was generated finds its file.
    let text = RECIPES.iter().find(|(n, _)| *n == recipe).map(|(_, t)| *t).expect("known recipe");
    std::fs::write(dir.join(format!("{recipe}.yml")), text).expect("write recipe");
    let mut config = MergeConfig::from_file(&dir.join(format!("{recipe}.yml"))).expect("recipe");
    config.recipe_dir = Some(dir.to_path_buf());
    let threads = std::env::var("EVOMERGE_BENCH_THREADS").ok().and_then(|t| t.parse().ok());
    let options = MergeOptions { threads, force: true, progress: false, ..Default::default() };
    let out = dir.join(format!("out-evomerge-{recipe}"));
    let report = merge_to_dir(&config, &out, &options).expect("merge");
    let gb = report.bytes_read as f64 / 1e9;
    println!(
        "{recipe:>10}: {:.2} s  (cpu {:.1} s)  read {:.2} GB  {:.2} GB/s  peak RSS {:.0} MB  ({} tensors, threads {})",
        report.seconds,
        cpu_seconds(),
        gb,
        gb / report.seconds,
        peak_rss_mb(),
        report.tensors,
        threads.map_or("all".to_string(), |t: usize| t.to_string()),
    );
}

fn main() {
    let dir = PathBuf::from(std::env::var("EVOMERGE_BENCH_DIR").unwrap_or_else(|_| "/tmp/evomerge-bench".into()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let what: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let params: usize = tensor_plan().iter().map(|p| p.numel()).sum();
    match what.first().map(String::as_str) {
        Some("generate") => generate(&dir),
        Some(recipe) if RECIPES.iter().any(|(n, _)| *n == recipe) => run_merge(&dir, recipe),
        Some(other) => panic!(
            "unknown benchmark `{other}`; use generate or one of {}",
            RECIPES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        ),
        None => {
            eprintln!("model set: 3 x {:.3} B parameters (bf16) in {}", params as f64 / 1e9, dir.display());
            generate(&dir);
            let exe = std::env::current_exe().expect("bench binary");
            for (recipe, _) in &RECIPES[..2] {
                let status = Command::new(&exe).arg(recipe).status().expect("run merge");
                assert!(status.success(), "{recipe} failed");
            }
        }
    }
}
