//! `evomerge inspect` on a checkpoint written by our writer: text, --tensors and --json output,
//! and a clear non-zero exit for a broken or missing model.

use std::path::Path;
use std::process::{Command, Output};

use evomerge_checkpoint::{f32_to_bytes, write_checkpoint, Dtype, WriteOptions};
use serde_json::json;

fn evomerge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_evomerge"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", std::env::temp_dir().join("evomerge-cli-inspect-empty-hf-home"))
        .output()
        .expect("running evomerge")
}

/// A tiny two-layer model in two shards.
fn write_model(dir: &Path) {
    let mut tensors = vec![("model.embed_tokens.weight".to_string(), Dtype::BF16, vec![32, 8])];
    for layer in 0..2 {
        tensors.push((format!("model.layers.{layer}.self_attn.q_proj.weight"), Dtype::BF16, vec![8, 8]));
        tensors.push((format!("model.layers.{layer}.input_layernorm.weight"), Dtype::F32, vec![8]));
    }
    tensors.push(("lm_head.weight".to_string(), Dtype::BF16, vec![32, 8]));
    let tensors: Vec<_> = tensors
        .into_iter()
        .map(|(n, d, s)| {
            let bytes = f32_to_bytes(d, &vec![0.5; s.iter().product()]);
            (n, d, s, bytes)
        })
        .collect();
    let config = json!({
        "architectures": ["MistralForCausalLM"],
        "model_type": "mistral",
        "hidden_size": 8,
        "num_hidden_layers": 2,
        "vocab_size": 32,
        "torch_dtype": "bfloat16"
    });
    write_checkpoint(dir, &tensors, &config, None, WriteOptions { max_shard_bytes: 900, force: false }).unwrap();
}

const PARAMS: u64 = 32 * 8 * 2 + 2 * (64 + 8);

#[test]
fn inspect_prints_a_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    write_model(&dir);
    let out = evomerge(&["inspect", dir.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    for expected in [
        "architecture: MistralForCausalLM",
        "model_type:   mistral",
        "layers:       2",
        "hidden_size:  8",
        "BF16 (4 tensors), F32 (2 tensors)",
        &format!("parameters:   {PARAMS} "),
        "shards:       2 (",
    ] {
        assert!(stdout.contains(expected), "missing `{expected}` in:\n{stdout}");
    }
    assert!(!stdout.contains("lm_head.weight"), "no tensor list without --tensors");
}

#[test]
fn inspect_lists_tensors_and_speaks_json() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    write_model(&dir);

    let out = evomerge(&["inspect", dir.to_str().unwrap(), "--tensors"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| l.starts_with("lm_head.weight")).expect("lm_head listed");
    assert!(line.contains("BF16") && line.contains("[32, 8]"), "{line}");

    let out = evomerge(&["inspect", dir.to_str().unwrap(), "--tensors", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(v["architecture"], "MistralForCausalLM");
    assert_eq!(v["num_layers"], 2);
    assert_eq!(v["parameters"], PARAMS);
    assert_eq!(v["num_shards"], 2);
    assert_eq!(v["dtypes"], json!({"BF16": 4, "F32": 2}));
    let tensors = v["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 6);
    let norm = tensors.iter().find(|t| t["name"] == "model.layers.1.input_layernorm.weight").unwrap();
    assert_eq!(norm["dtype"], "F32");
    assert_eq!(norm["shape"], json!([8]));
}

#[test]
fn inspect_fails_clearly_on_bad_models() {
    let tmp = tempfile::tempdir().unwrap();
    let out = evomerge(&["inspect", tmp.path().join("nope").to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not an existing directory"), "{stderr}");

    let dir = tmp.path().join("broken");
    write_model(&dir);
    let shard = dir.join("model-00001-of-00002.safetensors");
    let len = std::fs::metadata(&shard).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&shard).unwrap().set_len(len - 3).unwrap();
    let out = evomerge(&["inspect", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("truncated") && stderr.contains("model-00001-of-00002.safetensors"), "{stderr}");

    // A hub id that is not cached, offline: says what to do.
    let out = evomerge(&["inspect", "nobody/nothing"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nobody/nothing") && stderr.contains("HF_HUB_OFFLINE"), "{stderr}");
}
