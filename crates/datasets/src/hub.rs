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

/// The test-split data files of `benchmark` from `source`, in a stable (sorted) order.
pub fn resolve_files(
    benchmark: Benchmark,
    source: &DataSource,
) -> Result<Vec<PathBuf>, DatasetError> {
    resolve_split_files(benchmark, source, "test")
}

/// The data files of split `split` (`test`, `train`, `validation`, ...) of `benchmark`.
pub fn resolve_split_files(
    benchmark: Benchmark,
    source: &DataSource,
    split: &str,
) -> Result<Vec<PathBuf>, DatasetError> {
    match source {
        DataSource::Local(path) => local_split_files(benchmark, path, split),
        DataSource::Hub { revision } => {
            hub_split_files(benchmark, revision, split, &Cache::from_env(), offline())
        }
    }
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// A file is taken as is (its extension decides the parser); a directory is searched (recursively) for
/// files of the benchmark's format of the test split (see [`select_split`]).
pub fn local_files(benchmark: Benchmark, path: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    local_split_files(benchmark, path, "test")
}

/// As [`local_files`], for split `split`.
pub fn local_split_files(benchmark: Benchmark, path: &Path, split: &str) -> Result<Vec<PathBuf>, DatasetError> {
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
    let files = select_split(found, path, split).map_err(|message| DatasetError::Format {
        path: path.to_path_buf(),
        message,
    })?;
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

/// Split names recognised in file paths.
const SPLIT_NAMES: [&str; 4] = ["test", "train", "validation", "dev"];

/// The files of split `split`: those whose path below `root` names it. A folder whose files name no
/// split at all is one unsplit set and is taken whole; a folder whose files name only other splits
/// is an error (it used to be read as if it were the test split).
pub fn select_split(mut files: Vec<PathBuf>, root: &Path, split: &str) -> Result<Vec<PathBuf>, String> {
    files.sort();
    let split = split.to_ascii_lowercase();
    let rel = |p: &PathBuf| p.strip_prefix(root).unwrap_or(p).to_string_lossy().to_ascii_lowercase();
    if files.iter().any(|p| rel(p).contains(&split)) {
        files.retain(|p| rel(p).contains(&split));
        return Ok(files);
    }
    let others: Vec<&str> = SPLIT_NAMES.iter().copied().filter(|s| files.iter().any(|p| rel(p).contains(s))).collect();
    if others.is_empty() {
        Ok(files)
    } else {
        Err(format!("no `{split}` split here (the files are of split {})", others.join(", ")))
    }
}

/// Hub lookup of the test split with an explicit cache (tests pass a temporary one).
pub fn hub_files(
    benchmark: Benchmark,
    revision: &str,
    cache: &Cache,
    offline: bool,
) -> Result<Vec<PathBuf>, DatasetError> {
    hub_split_files(benchmark, revision, "test", cache, offline)
}

/// As [`hub_files`], for split `split`.
pub fn hub_split_files(
    benchmark: Benchmark,
    revision: &str,
    split: &str,
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
    if !known.is_empty() && split == "test" {
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
            if let Ok(files) = select_split(found, &snapshot, split) {
                if !files.is_empty() {
                    return Ok(files);
                }
            }
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
    let names: Vec<String> = info
        .siblings
        .into_iter()
        .map(|s| s.rfilename)
        .filter(|n| n.ends_with(&ext))
        .collect();
    let names = select_split(names.into_iter().map(PathBuf::from).collect(), Path::new(""), split)
        .map_err(&hub_err)?;
    if names.is_empty() {
        return Err(hub_err(format!("the repository has no {ext} file")));
    }
    let names: Vec<String> = names.iter().map(|p| p.to_string_lossy().into_owned()).collect();
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

#[cfg(test)]
mod split_tests {
    use super::*;

    #[test]
    fn splits_are_chosen_by_name_and_a_missing_one_is_an_error() {
        let root = Path::new("/d");
        let files = vec![PathBuf::from("/d/data/train-0.parquet"), PathBuf::from("/d/data/test-0.parquet")];
        assert_eq!(select_split(files.clone(), root, "train").unwrap(), [PathBuf::from("/d/data/train-0.parquet")]);
        assert_eq!(select_split(files, root, "test").unwrap(), [PathBuf::from("/d/data/test-0.parquet")]);
        let train_only = vec![PathBuf::from("/d/data/train-0.parquet")];
        let e = select_split(train_only, root, "test").unwrap_err();
        assert!(e.contains("no `test` split") && e.contains("train"), "{e}");
        let unsplit = vec![PathBuf::from("/d/mgsm_ja.tsv")];
        assert_eq!(select_split(unsplit.clone(), root, "test").unwrap(), unsplit);
    }
}
