//! Byte compatibility with Python, both ways (fixtures made by tests/fixtures/checkpoint/generate.py):
//! * we read what Python's safetensors and transformers wrote, value for value;
//! * our writer produces exactly the bytes that Python's safetensors and transformers were shown
//!   to read back bit-identically (rust_written_verified.json records the check and the hashes).

use std::path::{Path, PathBuf};

use evomerge_checkpoint::{Checkpoint, CheckpointWriter, TensorPlan, WriteOptions};
use sha2::{Digest, Sha256};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/checkpoint")
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks every tensor of `dir` against the dtype, shape, f32 hash and leading values Python recorded.
fn check_against_expected(dir: &Path) -> usize {
    let ckpt = Checkpoint::open_dir(dir).unwrap();
    let expected = read_json(&dir.join("expected.json"));
    let tensors = expected["tensors"].as_object().unwrap();
    assert_eq!(ckpt.tensor_names(), tensors.keys().map(String::as_str).collect::<Vec<_>>());
    for (name, want) in tensors {
        let t = ckpt.tensor(name).unwrap();
        assert_eq!(t.dtype.as_str(), want["dtype"], "{name}");
        let shape: Vec<usize> = want["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        assert_eq!(t.shape, shape.as_slice(), "{name}");
        let values = t.to_f32();
        let le: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(hex(&Sha256::digest(&le)), want["sha256_f32_le"], "{name}: f32 values differ from torch's");
        let bits: Vec<u64> = values.iter().take(8).map(|v| v.to_bits() as u64).collect();
        let want_bits: Vec<u64> = want["first_f32_bits"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap()).collect();
        assert_eq!(bits, want_bits, "{name}");
    }
    tensors.len()
}

#[test]
fn reads_python_safetensors_all_dtypes() {
    assert_eq!(check_against_expected(&fixtures().join("python_dtypes")), 6);
}

#[test]
fn reads_transformers_sharded_save_pretrained() {
    let dir = fixtures().join("python_tiny_mistral");
    let n = check_against_expected(&dir);
    let ckpt = Checkpoint::open_dir(&dir).unwrap();
    assert_eq!(ckpt.safetensors_files().len(), 2);
    assert_eq!(ckpt.tensor_names().len(), n);
    assert_eq!(ckpt.architecture(), Some("MistralForCausalLM"));
    assert_eq!(ckpt.num_layers(), Some(2));
}

/// Re-writes the transformers model with our writer, the way rust_written/ was made.
fn rewrite_tiny_mistral(out: &Path) -> PathBuf {
    let src_dir = fixtures().join("python_tiny_mistral");
    let src = Checkpoint::open_dir(&src_dir).unwrap();
    let plan: Vec<TensorPlan> = src
        .tensor_names()
        .iter()
        .map(|n| {
            let t = src.tensor(n).unwrap();
            TensorPlan::new(*n, t.dtype, t.shape.to_vec())
        })
        .collect();
    let opts = WriteOptions { max_shard_bytes: 20_000, force: true };
    let writer = CheckpointWriter::create(out, plan, opts).unwrap();
    for name in src.tensor_names() {
        // Through f32 and back: bf16 -> f32 -> bf16 must be the identity.
        writer.write_tensor_f32(name, &src.tensor(name).unwrap().to_f32()).unwrap();
    }
    writer.finish(src.config(), Some(&src_dir)).unwrap()
}

#[test]
fn writer_output_matches_the_bytes_python_verified() {
    let committed = fixtures().join("rust_written");
    if std::env::var_os("EVOMERGE_WRITE_FIXTURES").is_some() {
        rewrite_tiny_mistral(&committed);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ours = rewrite_tiny_mistral(&tmp.path().join("rust_written"));
    let verified = read_json(&fixtures().join("rust_written_verified.json"));
    assert_eq!(verified["all_tensors_bit_identical"], true);
    assert_eq!(verified["transformers_logits_bit_identical"], true);
    let hashes = verified["sha256"].as_object().unwrap();
    let mut files: Vec<String> =
        std::fs::read_dir(&ours).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(files, hashes.keys().cloned().collect::<Vec<_>>());
    assert!(files.iter().filter(|f| f.ends_with(".safetensors")).count() > 1, "the fixture is sharded");
    for f in &files {
        let bytes = std::fs::read(ours.join(f)).unwrap();
        assert_eq!(hex(&Sha256::digest(&bytes)), hashes[f], "{f} differs from what Python verified");
        assert_eq!(bytes, std::fs::read(committed.join(f)).unwrap(), "{f} differs from the committed copy");
    }
}
