//! Resolving hub ids (`org/name[@revision]`) to a directory in the local Hugging Face cache,
//! downloading with `hf-hub` only what the cache lacks. With everything cached this works offline.
//!
//! Cache location, as huggingface_hub does it: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`. `HF_HUB_OFFLINE=1`
//! forbids downloads; `HF_ENDPOINT` changes the server.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};
use serde_json::Value;

use crate::error::CheckpointError;
use crate::reader::{CONFIG_FILE, INDEX_FILE, SINGLE_FILE};

/// Files copied alongside the weights when present: tokenizer, chat template, generation and
/// processor settings. Downloads of these are best-effort.
pub const AUXILIARY_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "added_tokens.json",
    "chat_template.json",
    "chat_template.jinja",
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
];

/// The processor's share of the auxiliary files: image preprocessing settings and the chat
/// template (in a VLM the processor's template places the image). A merged VLM takes these from
/// the VLM even when its tokenizer comes from another model.
pub fn is_processor_file(name: &str) -> bool {
    matches!(name, "preprocessor_config.json" | "processor_config.json") || name.starts_with("chat_template")
}

/// A hub id split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubId {
    pub repo: String,
    pub revision: String,
}

impl HubId {
    /// Parses `org/name` or `org/name@revision`; `None` when `spec` does not look like a hub id.
    pub fn parse(spec: &str) -> Option<HubId> {
        let (repo, revision) = match spec.split_once('@') {
            Some((r, rev)) if !rev.is_empty() => (r, rev),
            Some(_) => return None,
            None => (spec, "main"),
        };
        let (org, name) = repo.split_once('/')?;
        let valid = |s: &str| {
            !s.is_empty()
                && s.len() <= 96
                && !s.starts_with(['.', '-'])
                && !s.contains("..")
                && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !valid(org) || !valid(name) || revision.contains("..") || revision.starts_with('/') {
            return None;
        }
        Some(HubId { repo: repo.to_string(), revision: revision.to_string() })
    }
}

/// Where a hub model lives in the cache.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// `snapshots/<commit>` directory: the model directory to open.
    pub snapshot: PathBuf,
    /// The repository's cache folder (`models--org--name`); shard symlinks must resolve inside it.
    pub repo_root: PathBuf,
}

/// The hub cache directory as huggingface_hub chooses it.
pub fn cache_dir() -> Option<PathBuf> {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = non_empty("HF_HUB_CACHE") {
        return Some(p);
    }
    if let Some(p) = non_empty("HF_HOME") {
        return Some(p.join("hub"));
    }
    if let Some(p) = non_empty("XDG_CACHE_HOME") {
        return Some(p.join("huggingface").join("hub"));
    }
    non_empty("HOME").map(|h| h.join(".cache").join("huggingface").join("hub"))
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

pub(crate) fn resolve(spec: &str) -> Result<Resolved, CheckpointError> {
    let id = HubId::parse(spec).ok_or_else(|| CheckpointError::NotFound { spec: spec.to_string() })?;
    let hub_err = |message: String| CheckpointError::Hub { spec: spec.to_string(), message };
    let cache_path = cache_dir()
        .ok_or_else(|| hub_err("cannot locate the Hugging Face cache: set HF_HOME or HOME".into()))?;
    let cache = Cache::new(cache_path.clone());
    let repo = Repo::with_revision(id.repo.clone(), RepoType::Model, id.revision.clone());
    let repo_root = cache_path.join(repo.folder_name());

    if let Some(snapshot) = cached_snapshot(&repo_root, &id.revision) {
        if weights_complete(&snapshot) {
            tracing::debug!(model = spec, dir = %snapshot.display(), "using cached hub snapshot");
            return Ok(Resolved { snapshot, repo_root });
        }
    }
    if offline() {
        return Err(hub_err(format!(
            "not a local directory and not (completely) in the Hugging Face cache at {}, and HF_HUB_OFFLINE is set; \
             unset HF_HUB_OFFLINE to download it, or pass a local model directory",
            cache_path.display()
        )));
    }
    download(spec, &id, cache, repo, repo_root)
}

/// The snapshot directory of hub repository `spec` (`org/name[@revision]`) holding every one of
/// `files`, for repositories that are not model checkpoints (e.g. a LoRA adapter: its config and
/// weights). Uses the cache when it has them all; otherwise downloads (unless `HF_HUB_OFFLINE`).
pub fn resolve_files(spec: &str, files: &[&str]) -> Result<PathBuf, CheckpointError> {
    use hf_hub::api::sync::ApiBuilder;

    let id = HubId::parse(spec).ok_or_else(|| CheckpointError::NotFound { spec: spec.to_string() })?;
    let hub_err = |message: String| CheckpointError::Hub { spec: spec.to_string(), message };
    let cache_path = cache_dir()
        .ok_or_else(|| hub_err("cannot locate the Hugging Face cache: set HF_HOME or HOME".into()))?;
    let repo = Repo::with_revision(id.repo.clone(), RepoType::Model, id.revision.clone());
    if let Some(snapshot) = cached_snapshot(&cache_path.join(repo.folder_name()), &id.revision) {
        if files.iter().all(|f| snapshot.join(f).is_file()) {
            return Ok(snapshot);
        }
    }
    if offline() {
        return Err(hub_err(format!(
            "not a local directory and {} not in the Hugging Face cache at {}, and HF_HUB_OFFLINE is set; \
             unset HF_HUB_OFFLINE to download it, or pass a local directory",
            files.join(", "),
            cache_path.display()
        )));
    }
    let mut builder = ApiBuilder::from_cache(Cache::new(cache_path)).with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if let Some(endpoint) = std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()) {
        builder = builder.with_endpoint(endpoint);
    }
    let api = builder.build().map_err(|e| hub_err(format!("cannot set up the hub client: {e}")))?;
    let api_repo = api.repo(repo);
    let mut snapshot = None;
    for file in files {
        let path = api_repo.get(file).map_err(|e| {
            hub_err(format!(
                "not a local directory and not in the Hugging Face cache; downloading {file} (revision {}) failed: {e}. \
                 Check the id and your network, or pass a local directory",
                id.revision
            ))
        })?;
        snapshot = path.parent().map(Path::to_path_buf);
    }
    snapshot.ok_or_else(|| hub_err("no files were asked for".into()))
}

/// The snapshot directory for `revision`: `refs/<revision>` names a commit; a full commit hash
/// may also be used directly.
fn cached_snapshot(repo_root: &Path, revision: &str) -> Option<PathBuf> {
    let snapshots = repo_root.join("snapshots");
    if let Ok(commit) = std::fs::read_to_string(repo_root.join("refs").join(revision)) {
        let dir = snapshots.join(commit.trim());
        if dir.is_dir() {
            return Some(dir);
        }
    }
    let direct = snapshots.join(revision);
    (revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit()) && direct.is_dir()).then_some(direct)
}

/// Whether the snapshot has config.json and every weight file (shards named by the index).
fn weights_complete(snapshot: &Path) -> bool {
    if !snapshot.join(CONFIG_FILE).is_file() {
        return false;
    }
    if snapshot.join(SINGLE_FILE).is_file() {
        return true;
    }
    match shard_names(&snapshot.join(INDEX_FILE)) {
        Some(shards) => shards.iter().all(|s| snapshot.join(s).is_file()),
        None => false,
    }
}

fn shard_names(index: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(index).ok()?;
    let value: Value = serde_json::from_str(&text).ok()?;
    let mut names: Vec<String> =
        value.get("weight_map")?.as_object()?.values().filter_map(|v| v.as_str().map(String::from)).collect();
    names.sort();
    names.dedup();
    Some(names)
}

fn download(spec: &str, id: &HubId, cache: Cache, repo: Repo, repo_root: PathBuf) -> Result<Resolved, CheckpointError> {
    use hf_hub::api::sync::ApiBuilder;
    use std::io::IsTerminal;

    let hub_err = |message: String| CheckpointError::Hub { spec: spec.to_string(), message };
    let mut builder = ApiBuilder::from_cache(cache).with_progress(std::io::stderr().is_terminal());
    if let Some(endpoint) = std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()) {
        builder = builder.with_endpoint(endpoint);
    }
    let api = builder.build().map_err(|e| hub_err(format!("cannot set up the hub client: {e}")))?;
    let api_repo = api.repo(repo);
    let fetch = |file: &str| {
        api_repo.get(file).map_err(|e| {
            hub_err(format!(
                "not a local directory and not in the Hugging Face cache; downloading {file} (revision {}) failed: {e}. \
                 Check the id and your network (for gated models set HF_TOKEN or run `huggingface-cli login`), \
                 or pass a local model directory",
                id.revision
            ))
        })
    };

    tracing::info!(model = spec, "downloading from the Hugging Face hub");
    let config = fetch(CONFIG_FILE)?;
    let snapshot = config
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| hub_err(format!("unexpected cache path {}", config.display())))?;
    match api_repo.get(INDEX_FILE) {
        Ok(index) => {
            let shards = shard_names(&index)
                .ok_or_else(|| hub_err(format!("{} is not a valid shard index", index.display())))?;
            for shard in shards {
                if !crate::reader::is_plain_relative(&shard) {
                    return Err(CheckpointError::ShardEscapesDir { index, shard });
                }
                fetch(&shard)?;
            }
        }
        Err(_) => {
            fetch(SINGLE_FILE)?;
        }
    }
    for file in AUXILIARY_FILES {
        if let Err(e) = api_repo.get(file) {
            tracing::debug!(model = spec, file, error = %e, "optional file not downloaded");
        }
    }
    Ok(Resolved { snapshot, repo_root })
}

#[cfg(test)]
mod tests {
    use super::HubId;

    #[test]
    fn parses_hub_ids() {
        assert_eq!(
            HubId::parse("mistralai/Mistral-7B-v0.1"),
            Some(HubId { repo: "mistralai/Mistral-7B-v0.1".into(), revision: "main".into() })
        );
        assert_eq!(
            HubId::parse("org/name@v1.0"),
            Some(HubId { repo: "org/name".into(), revision: "v1.0".into() })
        );
        assert_eq!(HubId::parse("name-only"), None);
        assert_eq!(HubId::parse("../etc/passwd"), None);
        assert_eq!(HubId::parse("/abs/path"), None);
        assert_eq!(HubId::parse("a/b/c"), None);
        assert_eq!(HubId::parse("org/name@"), None);
    }
}
