//! Throughput of the checkpoint layer on a synthetic Mistral-shaped bf16 model:
//! write (planned shards, 2 writer threads, f32 -> bf16), then open + read every tensor to f32.
//!
//!     cargo bench -p evomerge-checkpoint --bench read_write -- [--layers N] [--dir DIR] [--keep]
//!
//! The Python peer (same files, safetensors + torch) is benches/peer_read_write.py; see README.
//! Files are read right after being written, so both sides read from the page cache.

use std::path::PathBuf;
use std::time::Instant;

use evomerge_checkpoint::{Checkpoint, CheckpointWriter, Dtype, TensorPlan, WriteOptions};

fn mistral_plan(layers: usize) -> Vec<TensorPlan> {
    let (hidden, inter, kv, vocab) = (2048usize, 7168usize, 512usize, 32000usize);
    let mut plan = vec![TensorPlan::new("model.embed_tokens.weight", Dtype::BF16, vec![vocab, hidden])];
    for l in 0..layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        plan.push(TensorPlan::new(p("self_attn.q_proj.weight"), Dtype::BF16, vec![hidden, hidden]));
        plan.push(TensorPlan::new(p("self_attn.k_proj.weight"), Dtype::BF16, vec![kv, hidden]));
        plan.push(TensorPlan::new(p("self_attn.v_proj.weight"), Dtype::BF16, vec![kv, hidden]));
        plan.push(TensorPlan::new(p("self_attn.o_proj.weight"), Dtype::BF16, vec![hidden, hidden]));
        plan.push(TensorPlan::new(p("mlp.gate_proj.weight"), Dtype::BF16, vec![inter, hidden]));
        plan.push(TensorPlan::new(p("mlp.up_proj.weight"), Dtype::BF16, vec![inter, hidden]));
        plan.push(TensorPlan::new(p("mlp.down_proj.weight"), Dtype::BF16, vec![hidden, inter]));
        plan.push(TensorPlan::new(p("input_layernorm.weight"), Dtype::BF16, vec![hidden]));
        plan.push(TensorPlan::new(p("post_attention_layernorm.weight"), Dtype::BF16, vec![hidden]));
    }
    plan.push(TensorPlan::new("model.norm.weight", Dtype::BF16, vec![hidden]));
    plan.push(TensorPlan::new("lm_head.weight", Dtype::BF16, vec![vocab, hidden]));
    plan
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l.to_string()))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let layers: usize = flag("--layers").map(|v| v.parse()).transpose()?.unwrap_or(4);
    let dir = flag("--dir").map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("evomerge-ckpt-bench"));
    let keep = args.iter().any(|a| a == "--keep");
    let out = dir.join("model");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&dir)?;

    let plan = mistral_plan(layers);
    let params: usize = plan.iter().map(|p| p.numel()).sum();
    let bytes: usize = plan.iter().map(|p| p.size_in_bytes()).sum();
    println!("model: {layers} layers, {:.0} M params, {:.2} GB bf16", params as f64 / 1e6, bytes as f64 / 1e9);

    // Values made once (not timed); every tensor takes a prefix.
    let max_numel = plan.iter().map(|p| p.numel()).max().unwrap_or(0);
    let pattern: Vec<f32> = (0..max_numel).map(|j| ((j * 31) % 1024) as f32 * 1e-3 - 0.5).collect();

    // Write: two threads, each converting f32 values to bf16.
    let start = Instant::now();
    let writer = CheckpointWriter::create(&out, plan.clone(), WriteOptions { max_shard_bytes: 500_000_000, force: true })?;
    std::thread::scope(|scope| -> Result<(), evomerge_checkpoint::CheckpointError> {
        let handles: Vec<_> = (0..2)
            .map(|w| {
                let (writer, plan, pattern) = (&writer, &plan, &pattern);
                scope.spawn(move || {
                    for p in plan.iter().skip(w).step_by(2) {
                        writer.write_tensor_f32(&p.name, &pattern[..p.numel()])?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().expect("writer thread panicked")?;
        }
        Ok(())
    })?;
    writer.finish(&serde_json::json!({"model_type": "mistral"}), None)?;
    let write_s = start.elapsed().as_secs_f64();
    drop(pattern);
    println!("write (f32 -> bf16 + positioned writes): {write_s:.2} s, {:.2} GB/s written", bytes as f64 / 1e9 / write_s);

    // Open + read every tensor to f32.
    let start = Instant::now();
    let ckpt = Checkpoint::open_dir(&out)?;
    let open_s = start.elapsed().as_secs_f64();
    let mut buf = Vec::new();
    let mut checksum = 0f64;
    for name in ckpt.tensor_names() {
        let t = ckpt.tensor(name)?;
        buf.resize(t.numel(), 0.0);
        t.to_f32_into(&mut buf);
        checksum += buf[buf.len() / 2] as f64;
        ckpt.release(name);
    }
    let read_s = start.elapsed().as_secs_f64();
    println!(
        "open: {:.1} ms; open + read all to f32: {read_s:.2} s, {:.2} GB/s of bf16 read (checksum {checksum:.3})",
        open_s * 1e3,
        bytes as f64 / 1e9 / read_s
    );
    println!("peak RSS: {:.0} MB (largest tensor as f32: {:.0} MB)", peak_rss_mb(), max_numel as f64 * 4.0 / 1e6);
    if !keep {
        std::fs::remove_dir_all(&out)?;
    }
    Ok(())
}
