//! Every way a checkpoint on disk can be broken yields its own clear error naming the file (and
//! tensor), and every failed write leaves nothing behind. One test per case.

mod common;

use std::path::Path;

use common::*;
use evomerge_checkpoint::{Checkpoint, CheckpointError, CheckpointWriter, Dtype, TensorPlan, WriteOptions};

fn open_err(dir: &Path) -> CheckpointError {
    Checkpoint::open_dir(dir).expect_err("opening should fail")
}

/// The message names the file, so users know which one is broken.
fn assert_names_file(err: &CheckpointError, file: &str) {
    let msg = err.to_string();
    assert!(msg.contains(file), "message does not name {file}: {msg}");
}

#[test]
fn truncated_file_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_tiny(&tmp.path().join("m"), u64::MAX);
    let file = dir.join("model.safetensors");
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(len - 10).unwrap();
    let err = open_err(&dir);
    assert!(matches!(err, CheckpointError::TruncatedData { .. }), "{err:?}");
    assert_names_file(&err, "model.safetensors");
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn truncated_file_shorter_than_length_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = raw_model_bytes(&tmp.path().join("m"), &[1, 2, 3]);
    let err = open_err(&dir);
    assert!(matches!(err, CheckpointError::FileTooShort { len: 3, .. }), "{err:?}");
    assert_names_file(&err, "model.safetensors");
}

#[test]
fn header_length_larger_than_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bytes = 5000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{\"__metadata__\":{}}");
    let dir = raw_model_bytes(&tmp.path().join("m"), &bytes);
    let err = open_err(&dir);
    assert!(matches!(err, CheckpointError::HeaderBeyondFile { header_len: 5000, .. }), "{err:?}");
    assert_names_file(&err, "model.safetensors");
}

#[test]
fn header_length_absurdly_large() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bytes = 200_000_000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[b' '; 64]);
    let dir = raw_model_bytes(&tmp.path().join("m"), &bytes);
    let err = open_err(&dir);
    assert!(matches!(err, CheckpointError::HeaderTooLarge { header_len: 200_000_000, .. }), "{err:?}");
    assert!(err.to_string().contains("absurdly large"), "{err}");
}

#[test]
fn invalid_header_json() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = raw_model(&tmp.path().join("m"), "{\"a\": {\"dtype\": \"F32\", ", &[0; 16]);
    let err = open_err(&dir);
    assert!(matches!(err, CheckpointError::InvalidHeaderJson { .. }), "{err:?}");
    assert_names_file(&err, "model.safetensors");
}

#[test]
fn header_json_with_wrong_structure() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = raw_model(&tmp.path().join("m"), r#"{"a": {"dtype": "F32", "shape": [4]}}"#, &[0; 16]);
    let err = open_err(&dir);
    assert!(matches!(err, CheckpointError::InvalidHeader { .. }), "{err:?}");
    assert!(err.to_string().contains("data_offsets"), "{err}");
}

#[test]
fn tensor_offsets_outside_file() {
    let tmp = tempfile::tempdir().unwrap();
    let header = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[1000,1016]}}"#;
    let dir = raw_model(&tmp.path().join("m"), header, &[0; 16]);
    let err = open_err(&dir);
    match &err {
        CheckpointError::OffsetsOutsideFile { tensor, begin: 1000, end: 1016, data_len: 16, .. } => assert_eq!(tensor, "b"),
        other => panic!("{other:?}"),
    }
    assert_names_file(&err, "model.safetensors");
}

#[test]
fn tensor_offsets_not_matching_shape_and_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let header = r#"{"a":{"dtype":"BF16","shape":[4],"data_offsets":[0,16]}}"#;
    let dir = raw_model(&tmp.path().join("m"), header, &[0; 16]);
    let err = open_err(&dir);
    assert!(matches!(err, CheckpointError::TensorSizeMismatch { expected: 8, actual: 16, .. }), "{err:?}");
}

#[test]
fn overlapping_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let header = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#;
    let dir = raw_model(&tmp.path().join("m"), header, &[0; 16]);
    let err = open_err(&dir);
    assert!(matches!(err, CheckpointError::OverlappingTensors { .. }), "{err:?}");
}

#[test]
fn unsupported_dtype_is_named_when_read() {
    let tmp = tempfile::tempdir().unwrap();
    let header = r#"{"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},"w":{"dtype":"F32","shape":[1],"data_offsets":[16,20]}}"#;
    let dir = raw_model(&tmp.path().join("m"), header, &[0; 20]);
    let ckpt = Checkpoint::open_dir(&dir).unwrap();
    assert_eq!(ckpt.tensor("w").unwrap().to_f32(), vec![0.0]);
    let err = ckpt.tensor("ids").unwrap_err();
    assert!(matches!(err, CheckpointError::UnsupportedDtype { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("I64") && msg.contains("ids") && msg.contains("model.safetensors"), "{msg}");
}

#[test]
fn unknown_dtype_name_is_invalid_header() {
    let tmp = tempfile::tempdir().unwrap();
    let header = r#"{"w":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}"#;
    let dir = raw_model(&tmp.path().join("m"), header, &[0; 4]);
    let err = open_err(&dir);
    assert!(matches!(err, CheckpointError::InvalidHeader { .. }) && err.to_string().contains("F33"), "{err:?}");
}

/// A sharded model whose index names `shard` for every tensor.
fn model_with_index_entry(root: &Path, shard: &str) -> std::path::PathBuf {
    let dir = root.join("m");
    write_tiny(&dir, u64::MAX);
    let index = serde_json::json!({
        "metadata": {"total_size": 0},
        "weight_map": {"model.embed_tokens.weight": shard}
    });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    dir
}

#[test]
fn shard_name_escaping_with_dotdot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model_with_index_entry(tmp.path(), "../outside.safetensors");
    // The target exists, so only the path check can stop it.
    std::fs::copy(dir.join("model.safetensors"), tmp.path().join("outside.safetensors")).unwrap();
    let err = open_err(&dir);
    assert!(matches!(err, CheckpointError::ShardEscapesDir { .. }), "{err:?}");
    assert!(err.to_string().contains("../outside.safetensors"), "{err}");
}

#[test]
fn shard_name_escaping_with_absolute_path() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside.safetensors");
    let dir = model_with_index_entry(tmp.path(), outside.to_str().unwrap());
    std::fs::copy(dir.join("model.safetensors"), &outside).unwrap();
    let err = open_err(&dir);
    assert!(matches!(err, CheckpointError::ShardEscapesDir { .. }), "{err:?}");
}

#[cfg(unix)]
#[test]
fn shard_symlink_resolving_outside_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model_with_index_entry(tmp.path(), "link.safetensors");
    let outside = tmp.path().join("outside.safetensors");
    std::fs::copy(dir.join("model.safetensors"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("link.safetensors")).unwrap();
    let err = open_err(&dir);
    assert!(matches!(err, CheckpointError::ShardEscapesDir { .. }), "{err:?}");
}

#[test]
fn index_names_missing_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model_with_index_entry(tmp.path(), "model-00002-of-00002.safetensors");
    let err = open_err(&dir);
    assert!(matches!(err, CheckpointError::MissingShard { .. }), "{err:?}");
    assert!(err.to_string().contains("model-00002-of-00002.safetensors"), "{err}");
}

#[test]
fn tensor_stored_in_two_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_tiny(&tmp.path().join("m"), 300);
    // Every shard also holds a copy of the embedding.
    let mut copy = tiny_tensors();
    copy.truncate(1);
    let other = tmp.path().join("other");
    evomerge_checkpoint::write_checkpoint(&other, &copy, &tiny_config(), None, WriteOptions::default()).unwrap();
    std::fs::copy(other.join("model.safetensors"), dir.join("extra.safetensors")).unwrap();
    let index_path = dir.join("model.safetensors.index.json");
    let mut index: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
    index["weight_map"]["extra"] = "extra.safetensors".into();
    std::fs::write(&index_path, index.to_string()).unwrap();
    let err = open_err(&dir);
    match &err {
        CheckpointError::DuplicateTensor { tensor, .. } => assert_eq!(tensor, "model.embed_tokens.weight"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn index_entry_not_in_its_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_tiny(&tmp.path().join("m"), 300);
    let index_path = dir.join("model.safetensors.index.json");
    let mut index: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
    let first_shard = index["weight_map"]["model.embed_tokens.weight"].clone();
    index["weight_map"]["ghost.weight"] = first_shard;
    std::fs::write(&index_path, index.to_string()).unwrap();
    let err = open_err(&dir);
    assert!(matches!(err, CheckpointError::IndexMismatch { .. }) && err.to_string().contains("ghost.weight"), "{err:?}");
}

#[test]
fn missing_tensor_names_model_and_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_tiny(&tmp.path().join("finetune-a"), u64::MAX);
    let ckpt = Checkpoint::open_dir(&dir).unwrap();
    let err = ckpt.tensor("model.layers.7.mlp.down_proj.weight").unwrap_err();
    assert!(matches!(err, CheckpointError::MissingTensor { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("finetune-a") && msg.contains("model.layers.7.mlp.down_proj.weight"), "{msg}");
}

#[test]
fn missing_config_and_missing_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    assert!(matches!(open_err(&dir), CheckpointError::MissingConfig { .. }));
    std::fs::write(dir.join("config.json"), "{}").unwrap();
    std::fs::write(dir.join("pytorch_model.bin"), "").unwrap();
    let err = open_err(&dir);
    assert!(matches!(err, CheckpointError::NoWeights { .. }) && err.to_string().contains("pytorch_model.bin"), "{err}");
    std::fs::write(dir.join("config.json"), "{not json").unwrap();
    assert!(matches!(open_err(&dir), CheckpointError::InvalidConfig { .. }));
}

#[test]
fn open_of_unknown_spec_is_not_found() {
    let err = Checkpoint::open("/definitely/not/here").unwrap_err();
    assert!(matches!(err, CheckpointError::NotFound { .. }), "{err:?}");
}

// ---------------- writer ----------------

fn small_plan() -> Vec<TensorPlan> {
    vec![TensorPlan::new("a", Dtype::F32, vec![4]), TensorPlan::new("b", Dtype::BF16, vec![4]), TensorPlan::new("c", Dtype::F16, vec![2, 2])]
}

#[test]
fn output_dir_exists_is_refused_unless_force() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "old").unwrap();
    let err = CheckpointWriter::create(&out, small_plan(), WriteOptions::default()).unwrap_err();
    assert!(matches!(err, CheckpointError::OutputExists { .. }), "{err:?}");
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(entries(tmp.path()), ["out"], "nothing else created");
    assert_eq!(entries(&out), ["keep.txt"], "old output untouched");

    // With force, the old directory is replaced, but only once the new one is complete.
    let writer = CheckpointWriter::create(&out, small_plan(), WriteOptions { force: true, ..WriteOptions::default() }).unwrap();
    for p in small_plan() {
        writer.write_tensor_f32(&p.name, &vec![1.0; p.numel()]).unwrap();
    }
    assert_eq!(entries(&out), ["keep.txt"], "old output still in place before finish");
    writer.finish(&tiny_config(), None).unwrap();
    assert_eq!(entries(&out), ["config.json", "model.safetensors"]);
    assert_eq!(entries(tmp.path()), ["out"], "no backup or temp dir left");
}

#[test]
fn write_error_mid_write_removes_temp_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut writer = CheckpointWriter::create(&out, small_plan(), WriteOptions::default()).unwrap();
    // The disk "fills up" after the first tensor.
    writer.inject_write_failure_after(16);
    let temp = writer.temp_dir().to_path_buf();
    assert!(temp.is_dir());
    writer.write_tensor_f32("a", &[1.0; 4]).unwrap();
    let err = writer.write_tensor_f32("b", &[1.0; 4]).unwrap_err();
    match &err {
        CheckpointError::Io { source, .. } => assert_eq!(source.kind(), std::io::ErrorKind::StorageFull),
        other => panic!("{other:?}"),
    }
    drop(writer); // what `?` does in a merge loop
    assert!(!temp.exists(), "temp dir removed");
    assert!(!out.exists(), "nothing under the output name");
    assert!(entries(tmp.path()).is_empty());
}

#[test]
fn wrong_size_write_is_rejected_and_cleaned_up() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let writer = CheckpointWriter::create(&out, small_plan(), WriteOptions::default()).unwrap();
    let err = writer.write_tensor("a", &[0u8; 12]).unwrap_err();
    assert!(matches!(err, CheckpointError::WrongTensorSize { expected: 16, actual: 12, .. }), "{err:?}");
    let err = writer.write_tensor_f32("c", &[0.0; 3]).unwrap_err();
    assert!(err.to_string().contains("4 values") && err.to_string().contains("3 values"), "{err}");
    let err = writer.write_tensor("zzz", &[]).unwrap_err();
    assert!(matches!(err, CheckpointError::UnplannedTensor { .. }), "{err:?}");
    writer.write_tensor_f32("a", &[0.0; 4]).unwrap();
    let err = writer.write_tensor_f32("a", &[0.0; 4]).unwrap_err();
    assert!(matches!(err, CheckpointError::AlreadyWritten { .. }), "{err:?}");
    drop(writer);
    assert!(entries(tmp.path()).is_empty());
}

#[test]
fn finish_before_all_tensors_written_fails_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let writer = CheckpointWriter::create(&out, small_plan(), WriteOptions::default()).unwrap();
    writer.write_tensor_f32("a", &[0.0; 4]).unwrap();
    let err = writer.finish(&tiny_config(), None).unwrap_err();
    assert!(matches!(err, CheckpointError::Incomplete { count: 2, .. }), "{err:?}");
    assert!(entries(tmp.path()).is_empty());
}

#[test]
fn panic_while_writing_removes_temp_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let result = std::panic::catch_unwind(|| {
        let writer = CheckpointWriter::create(&out, small_plan(), WriteOptions::default()).unwrap();
        writer.write_tensor_f32("a", &[0.0; 4]).unwrap();
        panic!("worker crashed");
    });
    assert!(result.is_err());
    assert!(entries(tmp.path()).is_empty());
}

#[test]
fn invalid_plans_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let dup = vec![TensorPlan::new("a", Dtype::F32, vec![1]), TensorPlan::new("a", Dtype::F32, vec![1])];
    let err = CheckpointWriter::create(&out, dup, WriteOptions::default()).unwrap_err();
    assert!(matches!(err, CheckpointError::InvalidPlan { .. }) && err.to_string().contains("`a`"), "{err}");
    let err = CheckpointWriter::create(&out, vec![], WriteOptions::default()).unwrap_err();
    assert!(matches!(err, CheckpointError::InvalidPlan { .. }), "{err}");
    assert!(entries(tmp.path()).is_empty());
}

#[cfg(target_os = "linux")]
#[test]
fn leftovers_of_killed_writers_are_removed_live_ones_kept() {
    let tmp = tempfile::tempdir().unwrap();
    // pid_max on Linux is at most 2^22, so this pid cannot be running.
    let dead = tmp.path().join(".out.partial-4999999-deadbeef");
    let live = tmp.path().join(format!(".out.partial-{}-cafe0000", std::process::id()));
    let other_model = tmp.path().join(".other.partial-4999999-deadbeef");
    for d in [&dead, &live, &other_model] {
        std::fs::create_dir(d).unwrap();
    }
    let writer = CheckpointWriter::create(&tmp.path().join("out"), small_plan(), WriteOptions::default()).unwrap();
    assert!(!dead.exists(), "a killed writer's leftovers are cleaned up");
    assert!(live.exists() && other_model.exists(), "live writers and other outputs are left alone");
    drop(writer);
}
