//! Hub ids resolve offline from a Hugging Face cache laid out as huggingface_hub does it
//! (`models--org--name/{refs,blobs,snapshots}` with snapshot files symlinked to blobs).
//! Environment variables are process-wide, so everything runs in one test, in sequence.

mod common;

use std::path::Path;

use common::*;
use evomerge_checkpoint::{Checkpoint, CheckpointError};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Moves the files of a model directory into a fake cache entry for `repo` at `revision`.
fn populate_cache(hub: &Path, repo: &str, model: &Path, revision: &str, commit: &str) {
    let root = hub.join(format!("models--{}", repo.replace('/', "--")));
    let blobs = root.join("blobs");
    let snapshot = root.join("snapshots").join(commit);
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(root.join("refs")).unwrap();
    std::fs::write(root.join("refs").join(revision), commit).unwrap();
    for name in entries(model) {
        // Blob names are content hashes in the real cache; any unique name does here.
        let blob = blobs.join(format!("{commit}-{name}"));
        std::fs::copy(model.join(&name), &blob).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(Path::new("../../blobs").join(format!("{commit}-{name}")), snapshot.join(&name)).unwrap();
        #[cfg(not(unix))]
        std::fs::copy(&blob, snapshot.join(&name)).unwrap();
    }
}

#[test]
fn hub_ids_resolve_from_the_local_cache_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let hf_home = tmp.path().join("hf_home");
    let hub = hf_home.join("hub");
    std::env::remove_var("HF_HUB_CACHE");
    std::env::set_var("HF_HOME", &hf_home);
    // Any download attempt would be a bug: forbid it.
    std::env::set_var("HF_HUB_OFFLINE", "1");

    let single = write_tiny(&tmp.path().join("single"), u64::MAX);
    let sharded = write_tiny(&tmp.path().join("sharded"), 300);
    populate_cache(&hub, "evo/tiny", &single, "main", COMMIT);
    let commit_b = "fedcba9876543210fedcba9876543210fedcba98";
    populate_cache(&hub, "evo/tiny", &sharded, "v2", commit_b);

    // org/name -> refs/main.
    let ckpt = Checkpoint::open("evo/tiny").unwrap();
    assert!(ckpt.dir().ends_with(format!("snapshots/{COMMIT}")), "{}", ckpt.dir().display());
    assert_eq!(ckpt.safetensors_files().len(), 1);
    assert_eq!(ckpt.tensor("model.norm.weight").unwrap().to_f32(), pattern(8, 7));
    assert_eq!(ckpt.label(), "evo/tiny");

    // org/name@revision -> refs/<revision>; sharded files are symlinks into blobs/, which is allowed.
    let ckpt = Checkpoint::open("evo/tiny@v2").unwrap();
    assert!(ckpt.safetensors_files().len() > 1);
    assert_eq!(ckpt.tensor("lm_head.weight").unwrap().to_f32(), pattern(128, 8));

    // A full commit hash works without a ref.
    let ckpt = Checkpoint::open(&format!("evo/tiny@{commit_b}")).unwrap();
    assert!(ckpt.dir().ends_with(commit_b));

    // Not cached and offline: a clear error that says what to do.
    let err = Checkpoint::open("evo/absent").unwrap_err();
    assert!(matches!(err, CheckpointError::Hub { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("evo/absent") && msg.contains("HF_HUB_OFFLINE") && msg.contains("local model directory"), "{msg}");

    // A cached snapshot whose shard is missing counts as not cached.
    let root = hub.join("models--evo--tiny");
    let shard = std::fs::read_dir(root.join("snapshots").join(commit_b))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("00002-of-00006.safetensors"))
        .expect("sharded snapshot has a second shard");
    std::fs::remove_file(&shard).unwrap();
    assert!(matches!(Checkpoint::open("evo/tiny@v2").unwrap_err(), CheckpointError::Hub { .. }));

    // HF_HUB_CACHE takes precedence over HF_HOME.
    std::env::set_var("HF_HUB_CACHE", tmp.path().join("elsewhere"));
    assert!(matches!(Checkpoint::open("evo/tiny").unwrap_err(), CheckpointError::Hub { .. }));
    std::env::set_var("HF_HUB_CACHE", &hub);
    assert!(Checkpoint::open("evo/tiny").is_ok());

    // A local path that exists always wins over the hub id it spells.
    let cwd = tmp.path().join("cwd");
    std::fs::create_dir_all(cwd.join("evo")).unwrap();
    write_tiny(&cwd.join("evo").join("tiny"), 300);
    std::env::set_current_dir(&cwd).unwrap();
    let ckpt = Checkpoint::open("evo/tiny").unwrap();
    assert_eq!(ckpt.dir(), Path::new("evo/tiny"));
    assert!(ckpt.safetensors_files().len() > 1);
}
