//! Opening a model directory: `config.json` plus either `model.safetensors` or a
//! `model.safetensors.index.json` with its shards. Files are memory-mapped and only their headers
//! are read at open time; a tensor's bytes are a slice of the map, touched when first used.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Component, Path, PathBuf};

use memmap2::Mmap;
use serde_json::Value;

use crate::dtype::{decode_to_f32, Dtype};
use crate::error::CheckpointError;
use crate::header;

/// File name of an unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// File name of the shard index of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// File name of the model configuration.
pub const CONFIG_FILE: &str = "config.json";

/// A borrowed tensor: its raw little-endian bytes are a slice of the memory map.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    pub name: &'a str,
    pub dtype: Dtype,
    pub shape: &'a [usize],
    pub data: &'a [u8],
}

impl TensorView<'_> {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values converted to f32 in a new vector.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.numel()];
        decode_to_f32(self.dtype, self.data, &mut out);
        out
    }

    /// The values converted to f32 into `out`, which must hold exactly `numel()` elements.
    ///
    /// # Panics
    /// If `out.len() != self.numel()`.
    pub fn to_f32_into(&self, out: &mut [f32]) {
        assert_eq!(out.len(), self.numel(), "to_f32_into: buffer for `{}` has the wrong length", self.name);
        decode_to_f32(self.dtype, self.data, out);
    }
}

/// Name, dtype and shape of a tensor, without touching its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// The shard file holding it (a file name inside the model directory).
    pub file: String,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn size_in_bytes(&self) -> usize {
        self.numel() * self.dtype.size_of()
    }
}

struct Shard {
    path: PathBuf,
    file_name: String,
    map: Mmap,
}

struct Entry {
    shard: usize,
    dtype: Result<Dtype, String>,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// An opened Hugging Face model directory. Cheap to share across threads (`Send + Sync`).
pub struct Checkpoint {
    dir: PathBuf,
    label: String,
    config: Value,
    shards: Vec<Shard>,
    tensors: BTreeMap<String, Entry>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field("shards", &self.shards.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl Checkpoint {
    /// Opens a model named by a local directory or, when no such path exists, a hub id
    /// `org/name[@revision]` (resolved through the local Hugging Face cache first, downloading
    /// only what is missing). A path that exists locally always wins.
    pub fn open(spec: &str) -> Result<Checkpoint, CheckpointError> {
        let path = Path::new(spec);
        if path.exists() {
            return Checkpoint::open_dir(path);
        }
        let resolved = crate::hub::resolve(spec)?;
        let mut ckpt = Checkpoint::open_in(&resolved.snapshot, Some(&resolved.repo_root))?;
        ckpt.label = spec.to_string();
        Ok(ckpt)
    }

    /// Opens a local model directory.
    pub fn open_dir(dir: &Path) -> Result<Checkpoint, CheckpointError> {
        Checkpoint::open_in(dir, None)
    }

    /// Opens `dir`; shard files must resolve inside `root` (default: `dir` itself). Hub cache
    /// snapshots hold symlinks into the repository's `blobs/`, so for them the root is the repo folder.
    pub(crate) fn open_in(dir: &Path, root: Option<&Path>) -> Result<Checkpoint, CheckpointError> {
        let meta = std::fs::metadata(dir).map_err(|e| CheckpointError::io(dir, e))?;
        if !meta.is_dir() {
            return Err(CheckpointError::NotADirectory { path: dir.to_path_buf() });
        }
        let config = read_config(dir)?;
        let root = match root {
            Some(r) => r.canonicalize().map_err(|e| CheckpointError::io(r, e))?,
            None => dir.canonicalize().map_err(|e| CheckpointError::io(dir, e))?,
        };

        let index_path = dir.join(INDEX_FILE);
        let single_path = dir.join(SINGLE_FILE);
        let (shard_names, index) = if index_path.exists() {
            let index = read_index(&index_path)?;
            let mut names: Vec<String> = index.values().cloned().collect();
            names.sort();
            names.dedup();
            (names, Some((index_path, index)))
        } else if single_path.exists() {
            (vec![SINGLE_FILE.to_string()], None)
        } else {
            return Err(no_weights(dir));
        };

        let mut shards: Vec<Shard> = Vec::with_capacity(shard_names.len());
        let mut tensors: BTreeMap<String, Entry> = BTreeMap::new();
        for file_name in shard_names {
            let index_file = index.as_ref().map(|(p, _)| p.as_path()).unwrap_or(single_path.as_path());
            let path = checked_shard_path(dir, &root, index_file, &file_name)?;
            let file = File::open(&path).map_err(|e| CheckpointError::io(&path, e))?;
            let len = file.metadata().map_err(|e| CheckpointError::io(&path, e))?.len();
            if len < 8 {
                return Err(CheckpointError::FileTooShort { path, len });
            }
            // SAFETY: the map is read-only; as with every mmap-based reader, the file must not be
            // truncated by another process while the checkpoint is open.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| CheckpointError::io(&path, e))?;
            let parsed = header::parse(&path, &map)?;
            let shard_index = shards.len();
            for raw in parsed.tensors {
                if let Some(previous) = tensors.get(&raw.name) {
                    return Err(CheckpointError::DuplicateTensor {
                        tensor: raw.name,
                        first: shards[previous.shard].path.clone(),
                        second: path,
                    });
                }
                let entry = Entry { shard: shard_index, dtype: raw.dtype, shape: raw.shape, start: raw.start, end: raw.end };
                tensors.insert(raw.name, entry);
            }
            shards.push(Shard { path, file_name, map });
        }

        if let Some((index_path, index)) = &index {
            for (tensor, shard) in index {
                let found = tensors.get(tensor).map(|e| shards[e.shard].file_name.as_str());
                if found != Some(shard.as_str()) {
                    return Err(CheckpointError::IndexMismatch {
                        index: index_path.clone(),
                        tensor: tensor.clone(),
                        shard: shard.clone(),
                    });
                }
            }
            for name in tensors.keys() {
                if !index.contains_key(name) {
                    tracing::warn!(index = %index_path.display(), tensor = %name, "tensor is in a shard but not in the index; using it anyway");
                }
            }
        }

        Ok(Checkpoint { dir: dir.to_path_buf(), label: dir.display().to_string(), config, shards, tensors })
    }

    /// The model directory (for hub models: the snapshot directory in the cache).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How the model was named when opened (hub id or directory), for messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The parsed `config.json`.
    pub fn config(&self) -> &Value {
        &self.config
    }

    /// All tensor names, sorted.
    pub fn tensor_names(&self) -> Vec<&str> {
        self.tensors.keys().map(String::as_str).collect()
    }

    /// Whether the model has a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Name, dtype, shape and shard of a tensor, without touching its data.
    pub fn tensor_info(&self, name: &str) -> Result<TensorInfo, CheckpointError> {
        let (key, entry) = self.entry(name)?;
        let dtype = self.entry_dtype(key, entry)?;
        Ok(TensorInfo {
            name: key.to_string(),
            dtype,
            shape: entry.shape.clone(),
            file: self.shards[entry.shard].file_name.clone(),
        })
    }

    /// A tensor's bytes as a view into the memory map.
    pub fn tensor(&self, name: &str) -> Result<TensorView<'_>, CheckpointError> {
        let (key, entry) = self.entry(name)?;
        let dtype = self.entry_dtype(key, entry)?;
        Ok(TensorView {
            name: key,
            dtype,
            shape: &entry.shape,
            data: &self.shards[entry.shard].map[entry.start..entry.end],
        })
    }

    /// Lets this tensor's pages leave the process's resident set (they stay in the OS page cache
    /// and are re-read transparently if the tensor is used again). A streaming pass over a large
    /// model calls this after consuming each tensor so memory stays O(a tensor), not O(model).
    /// Outstanding views stay valid. A no-op where the OS has no `madvise`.
    pub fn release(&self, name: &str) {
        let Some(entry) = self.tensors.get(name) else { return };
        #[cfg(unix)]
        {
            let map = &self.shards[entry.shard].map;
            // SAFETY: the map is a read-only shared file mapping: MADV_DONTNEED only drops this
            // process's page-table entries; the next access faults the same bytes back in from
            // the file, so borrowed slices keep their contents.
            let result = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, entry.start, entry.end - entry.start)
            };
            if let Err(e) = result {
                tracing::debug!(tensor = name, error = %e, "madvise(DONTNEED) failed");
            }
        }
        #[cfg(not(unix))]
        let _ = entry;
    }

    /// The safetensors files of the model, in the order they were opened.
    pub fn safetensors_files(&self) -> Vec<PathBuf> {
        self.shards.iter().map(|s| s.path.clone()).collect()
    }

    /// Total size of the safetensors files in bytes (headers included).
    pub fn total_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.map.len() as u64).sum()
    }

    /// Total size of tensor data in bytes.
    pub fn tensor_bytes(&self) -> u64 {
        self.tensors.values().map(|e| (e.end - e.start) as u64).sum()
    }

    /// Number of parameters (sum of all tensors' element counts).
    pub fn parameter_count(&self) -> u64 {
        self.tensors.values().map(|e| e.shape.iter().map(|&d| d as u64).product::<u64>()).sum()
    }

    /// Count of tensors per dtype; unsupported dtypes appear under their safetensors name.
    pub fn dtype_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for e in self.tensors.values() {
            let name = match &e.dtype {
                Ok(d) => d.as_str().to_string(),
                Err(other) => other.clone(),
            };
            *counts.entry(name).or_insert(0) += 1;
        }
        counts
    }

    /// `architectures[0]` of the config, falling back to `model_type`.
    pub fn architecture(&self) -> Option<&str> {
        self.config
            .get("architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .or_else(|| self.model_type())
    }

    /// `model_type` of the config.
    pub fn model_type(&self) -> Option<&str> {
        self.config.get("model_type").and_then(Value::as_str)
    }

    /// A config value looked up on the top level, then in `text_config` (LLaVA-style models
    /// keep the language model's hyper-parameters there).
    pub fn text_config_value(&self, key: &str) -> Option<&Value> {
        self.config
            .get(key)
            .or_else(|| self.config.get("text_config").and_then(|t| t.get(key)))
    }

    /// Number of transformer layers: `num_hidden_layers` (top level or `text_config`), else
    /// counted from tensor names of the form `...layers.<i>.` .
    pub fn num_layers(&self) -> Option<usize> {
        if let Some(n) = self.text_config_value("num_hidden_layers").and_then(Value::as_u64) {
            return usize::try_from(n).ok();
        }
        self.tensors
            .keys()
            .filter_map(|name| layer_index(name))
            .max()
            .map(|max| max + 1)
    }

    /// Hidden size: `hidden_size` (top level or `text_config`).
    pub fn hidden_size(&self) -> Option<usize> {
        self.text_config_value("hidden_size").and_then(Value::as_u64).and_then(|n| usize::try_from(n).ok())
    }

    fn entry(&self, name: &str) -> Result<(&str, &Entry), CheckpointError> {
        self.tensors
            .get_key_value(name)
            .map(|(k, e)| (k.as_str(), e))
            .ok_or_else(|| CheckpointError::MissingTensor { model: self.label.clone(), tensor: name.to_string() })
    }

    fn entry_dtype(&self, name: &str, entry: &Entry) -> Result<Dtype, CheckpointError> {
        entry.dtype.clone().map_err(|dtype| CheckpointError::UnsupportedDtype {
            path: self.shards[entry.shard].path.clone(),
            tensor: name.to_string(),
            dtype,
        })
    }
}

/// The layer number in names like `model.layers.12.mlp.up_proj.weight`.
pub fn layer_index(name: &str) -> Option<usize> {
    let mut parts = name.split('.');
    while let Some(part) = parts.next() {
        if part == "layers" || part == "layer" || part == "h" || part == "blocks" {
            if let Some(Ok(i)) = parts.clone().next().map(str::parse::<usize>) {
                return Some(i);
            }
        }
    }
    None
}

fn read_config(dir: &Path) -> Result<Value, CheckpointError> {
    let path = dir.join(CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CheckpointError::MissingConfig { dir: dir.to_path_buf() })
        }
        Err(e) => return Err(CheckpointError::io(&path, e)),
    };
    let value: Value =
        serde_json::from_str(&text).map_err(|e| CheckpointError::InvalidConfig { path: path.clone(), detail: e.to_string() })?;
    if !value.is_object() {
        return Err(CheckpointError::InvalidConfig { path, detail: "not a JSON object".into() });
    }
    Ok(value)
}

/// Reads the `weight_map` of a shard index.
fn read_index(path: &Path) -> Result<HashMap<String, String>, CheckpointError> {
    let invalid = |detail: String| CheckpointError::InvalidIndex { path: path.to_path_buf(), detail };
    let text = std::fs::read_to_string(path).map_err(|e| CheckpointError::io(path, e))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let map = value
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("no `weight_map` object".into()))?;
    map.iter()
        .map(|(tensor, shard)| match shard.as_str() {
            Some(s) => Ok((tensor.clone(), s.to_string())),
            None => Err(invalid(format!("`weight_map` entry for `{tensor}` is not a string"))),
        })
        .collect()
}

/// Joins a shard name from the index onto the model directory, refusing names that could read
/// outside it: absolute paths, `..` components, and symlinks that resolve outside `root`.
fn checked_shard_path(dir: &Path, root: &Path, index: &Path, shard: &str) -> Result<PathBuf, CheckpointError> {
    let escapes = || CheckpointError::ShardEscapesDir { index: index.to_path_buf(), shard: shard.to_string() };
    if !is_plain_relative(shard) {
        return Err(escapes());
    }
    let path = dir.join(shard);
    let resolved = match path.canonicalize() {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CheckpointError::MissingShard { index: index.to_path_buf(), shard: shard.to_string() })
        }
        Err(e) => return Err(CheckpointError::io(&path, e)),
    };
    if !resolved.starts_with(root) {
        return Err(escapes());
    }
    Ok(path)
}

/// A non-empty relative path made only of normal components (no `..`, `.`, root or prefix).
pub(crate) fn is_plain_relative(name: &str) -> bool {
    let path = Path::new(name);
    !name.is_empty() && !path.is_absolute() && path.components().all(|c| matches!(c, Component::Normal(_)))
}

fn no_weights(dir: &Path) -> CheckpointError {
    let mut others: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".safetensors") || n.ends_with(".bin") || n.ends_with(".pth"))
        .collect();
    others.sort();
    let hint = if others.is_empty() {
        String::new()
    } else {
        format!(" (found {}; only model.safetensors or an indexed sharded set is supported)", others.join(", "))
    };
    CheckpointError::NoWeights { dir: dir.to_path_buf(), hint }
}

#[cfg(test)]
mod tests {
    use super::layer_index;

    #[test]
    fn finds_layer_index() {
        assert_eq!(layer_index("model.layers.12.mlp.up_proj.weight"), Some(12));
        assert_eq!(layer_index("language_model.model.layers.0.self_attn.q_proj.weight"), Some(0));
        assert_eq!(layer_index("model.embed_tokens.weight"), None);
        assert_eq!(layer_index("model.layers.norm"), None);
    }
}

/// One tensor of a safetensors file read whole into memory by [`read_tensor_file`].
#[derive(Debug, Clone)]
pub struct FileTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Little-endian stored bytes.
    pub data: Vec<u8>,
}

impl FileTensor {
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.shape.iter().product()];
        decode_to_f32(self.dtype, &self.data, &mut out);
        out
    }
}

/// Every tensor of one small safetensors file that is not a model directory (e.g. a LoRA
/// adapter's `adapter_model.safetensors`), validated as [`Checkpoint::open`] validates shards.
pub fn read_tensor_file(path: &Path) -> Result<Vec<FileTensor>, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|e| CheckpointError::io(path, e))?;
    let parsed = header::parse(path, &bytes)?;
    parsed
        .tensors
        .into_iter()
        .map(|raw| {
            let dtype = raw.dtype.map_err(|dtype| CheckpointError::UnsupportedDtype {
                path: path.to_path_buf(),
                tensor: raw.name.clone(),
                dtype,
            })?;
            Ok(FileTensor { data: bytes[raw.start..raw.end].to_vec(), name: raw.name, dtype, shape: raw.shape })
        })
        .collect()
}
