//! Finding a benchmark's data files: a local path, or the Hugging Face hub with the local cache first.
//!
//! Hub lookups never touch the network when the files are cached (`$HF_HOME/hub`, default
//! `~/.cache/huggingface/hub`), and never at all with `HF_HUB_OFFLINE=1`. When the exact file name is not
//! known (the Sakana datasets), the cached snapshot is searched, and online the repository's file list is
//! read and its test-split files of the right format are downloaded.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use crate::{Benchmark, DataSource, DatasetError, FileFormat};

/// The data files of `benchmark` from `source`, in a stable (sorted) order.
pub fn resolve_files(
    benchmark: Benchmark,
    source: &DataSource,
) -> Result<Vec<PathBuf>, DatasetError> {
    match source {
        DataSource::Local(path) => local_files(benchmark, path),
        DataSource::Hub { revision } => {
            hub_files(benchmark, revision, &Cache::from_env(), offline())
        }
    }
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// A file is taken as is (its extension decides the parser); a directory is searched (recursively) for
/// files of the benchmark's format, preferring those with "test" in their path.
pub fn local_files(benchmark: Benchmark, path: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let meta = std::fs::metadata(path).map_err(|source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut found = Vec::new();
    collect_files(path, benchmark.format(), &mut found).map_err(|source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let files = prefer_test_split(found, path);
    if files.is_empty() {
        return Err(DatasetError::Format {
            path: path.to_path_buf(),
            message: format!(
                "no .{} file for {} in this directory",
                benchmark.format().extension(),
                benchmark.name()
            ),
        });
    }
    Ok(files)
}

fn collect_files(dir: &Path, format: FileFormat, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        // `metadata` follows symlinks: hub snapshots are symlinks into the blob store.
        let meta = std::fs::metadata(&path)?;
        if meta.is_dir() {
            collect_files(&path, format, out)?;
        } else if FileFormat::from_path(&path) == Some(format) {
            out.push(path);
        }
    }
    Ok(())
}

fn prefer_test_split(mut files: Vec<PathBuf>, root: &Path) -> Vec<PathBuf> {
    files.sort();
    let is_test = |p: &PathBuf| {
        p.strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .to_ascii_lowercase()
            .contains("test")
    };
    if files.iter().any(is_test) {
        files.retain(is_test);
    }
    files
}

/// Hub lookup with an explicit cache (tests pass a temporary one).
pub fn hub_files(
    benchmark: Benchmark,
    revision: &str,
    cache: &Cache,
    offline: bool,
) -> Result<Vec<PathBuf>, DatasetError> {
    let repo_id = benchmark.hub_repo().to_string();
    let repo = Repo::with_revision(repo_id.clone(), RepoType::Dataset, revision.to_string());
    let hub_err = |message: String| DatasetError::Hub {
        repo: repo_id.clone(),
        message,
    };
    let not_cached = || {
        hub_err(format!(
            "not in the local cache ({}) and HF_HUB_OFFLINE is set: run once online, or pass --data with a local copy",
            cache.path().display()
        ))
    };
    let cache_repo = cache.repo(repo.clone());

    let known = benchmark.known_hub_files();
    if !known.is_empty() {
        let mut files = Vec::new();
        for name in known {
            match cache_repo.get(name) {
                Some(path) => files.push(path),
                None if offline => return Err(not_cached()),
                None => files.push(
                    api(cache, &hub_err)?
                        .repo(repo.clone())
                        .get(name)
                        .map_err(|e| hub_err(format!("downloading {name}: {e}")))?,
                ),
            }
        }
        return Ok(files);
    }

    if let Some(snapshot) = cached_snapshot(cache, &repo) {
        let mut found = Vec::new();
        if collect_files(&snapshot, benchmark.format(), &mut found).is_ok() && !found.is_empty() {
            return Ok(prefer_test_split(found, &snapshot));
        }
    }
    if offline {
        return Err(not_cached());
    }
    let api_repo = api(cache, &hub_err)?.repo(repo.clone());
    let info = api_repo
        .info()
        .map_err(|e| hub_err(format!("listing files: {e}")))?;
    let ext = format!(".{}", benchmark.format().extension());
    let mut names: Vec<String> = info
        .siblings
        .into_iter()
        .map(|s| s.rfilename)
        .filter(|n| n.ends_with(&ext))
        .collect();
    names.sort();
    if names
        .iter()
        .any(|n| n.to_ascii_lowercase().contains("test"))
    {
        names.retain(|n| n.to_ascii_lowercase().contains("test"));
    }
    if names.is_empty() {
        return Err(hub_err(format!("the repository has no {ext} file")));
    }
    names
        .iter()
        .map(|name| {
            api_repo
                .get(name)
                .map_err(|e| hub_err(format!("downloading {name}: {e}")))
        })
        .collect()
}

fn api(
    cache: &Cache,
    hub_err: &impl Fn(String) -> DatasetError,
) -> Result<hf_hub::api::sync::Api, DatasetError> {
    ApiBuilder::from_cache(cache.clone())
        .with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .build()
        .map_err(|e| hub_err(format!("cannot start the hub client: {e}")))
}

/// The snapshot directory the cache's ref for this revision points at, if any.
fn cached_snapshot(cache: &Cache, repo: &Repo) -> Option<PathBuf> {
    let base = cache.path().join(repo.folder_name());
    let commit = std::fs::read_to_string(base.join("refs").join(repo.revision())).ok()?;
    let dir = base.join("snapshots").join(commit.trim());
    dir.is_dir().then_some(dir)
}
