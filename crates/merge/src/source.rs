//! Where merge inputs come from: anything implementing [`TensorSource`] (an opened checkpoint, or
//! tensors already in memory, as the evolutionary search holds them).

use std::collections::BTreeMap;
use std::path::Path;

use evomerge_checkpoint::{Checkpoint, Dtype};
use rayon::prelude::*;
use serde_json::Value;

use crate::MergeError;

/// A model's tensors, readable one at a time as f32.
pub trait TensorSource: Send + Sync {
    /// How the model is named in messages.
    fn label(&self) -> String;
    /// The model's `config.json`, when it has one.
    fn config(&self) -> Option<&Value>;
    /// Directory holding tokenizer/processor files to copy into a merged model.
    fn files_dir(&self) -> Option<&Path> {
        None
    }
    fn tensor_names(&self) -> Vec<String>;
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    fn dtype(&self, name: &str) -> Option<Dtype>;
    /// The tensor's values as f32 (row-major) into `out`, resized to fit.
    fn read_f32(&self, name: &str, out: &mut Vec<f32>) -> Result<(), MergeError>;
    /// The stored bytes, for bit-exact copies (only sources backed by files have them).
    fn raw(&self, _name: &str) -> Option<(Dtype, &[u8])> {
        None
    }
    /// Hint that `name` will not be read again (file-backed sources drop its mapped pages so a
    /// streaming merge's resident memory stays small).
    fn release(&self, _name: &str) {}
}

impl TensorSource for Checkpoint {
    fn label(&self) -> String {
        Checkpoint::label(self).to_string()
    }
    fn config(&self) -> Option<&Value> {
        Some(Checkpoint::config(self))
    }
    fn files_dir(&self) -> Option<&Path> {
        Some(self.dir())
    }
    fn tensor_names(&self) -> Vec<String> {
        Checkpoint::tensor_names(self).into_iter().map(str::to_string).collect()
    }
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensor_info(name).ok().map(|i| i.shape)
    }
    fn dtype(&self, name: &str) -> Option<Dtype> {
        self.tensor_info(name).ok().map(|i| i.dtype)
    }
    fn read_f32(&self, name: &str, out: &mut Vec<f32>) -> Result<(), MergeError> {
        let view = self.tensor(name)?;
        out.clear();
        let bf16 = |c: &[u8]| evomerge_checkpoint::bf16_bits_to_f32(u16::from_le_bytes([c[0], c[1]]));
        let numel = view.numel();
        if view.dtype == Dtype::BF16 && view.data.len() == numel * 2 {
            // The checkpoint's own bf16 conversion, appended without zero-filling the buffer first.
            if numel < PARALLEL_DECODE {
                // Straight into the buffer, without zero-filling it first.
                out.extend(view.data.chunks_exact(2).map(bf16));
            } else {
                // Large tensors (embeddings) are merged alone under the memory budget: decode on
                // all workers rather than one (still without zero-filling).
                out.par_extend(view.data.par_chunks_exact(2).with_min_len(DECODE_CHUNK).map(bf16));
            }
        } else {
            out.resize(view.numel(), 0.0);
            view.to_f32_into(out);
        }
        Ok(())
    }
    fn raw(&self, name: &str) -> Option<(Dtype, &[u8])> {
        self.tensor(name).ok().map(|v| (v.dtype, v.data))
    }
    fn release(&self, name: &str) {
        if let Ok(view) = self.tensor(name) {
            release_pages(view.data);
        }
    }
}

/// Tensors from this many values up are decoded in parallel.
const PARALLEL_DECODE: usize = 1 << 24;
const DECODE_CHUNK: usize = 1 << 18;

/// Drop the resident pages of a read-only memory-mapped range (they are re-read from the file if
/// touched again). Only whole pages inside the range are affected.
#[cfg(unix)]
fn release_pages(data: &[u8]) {
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if page <= 0 {
        return;
    }
    let page = page as usize;
    let start = data.as_ptr() as usize;
    let first = start.div_ceil(page) * page;
    let end = (start + data.len()) / page * page;
    if end > first {
        // SAFETY: [first, end) lies inside `data`, a read-only file mapping owned by the
        // checkpoint; MADV_DONTNEED on such a mapping only discards clean cached pages, so later
        // reads see the same bytes (faulted back in from the file).
        unsafe {
            libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_DONTNEED);
        }
    }
}

#[cfg(not(unix))]
fn release_pages(_data: &[u8]) {}

/// Tensors held in memory as f32: the evolutionary search's view of its loaded models, and tests'.
#[derive(Debug, Clone, Default)]
pub struct MemorySource {
    pub label: String,
    pub config: Option<Value>,
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl MemorySource {
    pub fn new(label: impl Into<String>) -> Self {
        MemorySource { label: label.into(), ..Default::default() }
    }

    pub fn insert(&mut self, name: impl Into<String>, shape: Vec<usize>, values: Vec<f32>) -> Result<(), MergeError> {
        let name = name.into();
        let numel: usize = shape.iter().product();
        if numel != values.len() {
            return Err(MergeError::InvalidInputs {
                tensor: name,
                message: format!("shape {shape:?} needs {numel} values, got {}", values.len()),
            });
        }
        self.tensors.insert(name, (shape, values));
        Ok(())
    }

    /// Load every tensor of another source (e.g. a checkpoint) into memory.
    pub fn load(source: &dyn TensorSource) -> Result<Self, MergeError> {
        let mut mem = MemorySource::new(source.label());
        mem.config = source.config().cloned();
        for name in source.tensor_names() {
            let mut values = Vec::new();
            source.read_f32(&name, &mut values)?;
            let shape = source.shape(&name).unwrap_or_else(|| vec![values.len()]);
            mem.tensors.insert(name, (shape, values));
        }
        Ok(mem)
    }
}

impl TensorSource for MemorySource {
    fn label(&self) -> String {
        self.label.clone()
    }
    fn config(&self) -> Option<&Value> {
        self.config.as_ref()
    }
    fn tensor_names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|(s, _)| s.clone())
    }
    fn dtype(&self, name: &str) -> Option<Dtype> {
        self.tensors.get(name).map(|_| Dtype::F32)
    }
    fn read_f32(&self, name: &str, out: &mut Vec<f32>) -> Result<(), MergeError> {
        let (_, values) = self.tensors.get(name).ok_or_else(|| MergeError::MissingTensor {
            tensor: name.to_string(),
            model: self.label.clone(),
        })?;
        out.clear();
        out.extend_from_slice(values);
        Ok(())
    }
}

/// A model's tensors read once into memory in their stored dtype and kept there, for a search that
/// merges thousands of candidates from the same sources: bf16 stays bf16 (half the memory of an f32
/// copy), f32 is copied out with one `memcpy`. Reads never touch the file again.
#[derive(Debug)]
pub struct ResidentSource {
    label: String,
    config: Option<Value>,
    files_dir: Option<std::path::PathBuf>,
    tensors: BTreeMap<String, ResidentTensor>,
}

#[derive(Debug)]
struct ResidentTensor {
    shape: Vec<usize>,
    dtype: Dtype,
    data: ResidentData,
}

#[derive(Debug)]
enum ResidentData {
    F32(Vec<f32>),
    /// Stored bytes of any other dtype, decoded on read.
    Bytes(Vec<u8>),
}

impl ResidentSource {
    /// Read every tensor of `checkpoint` into memory.
    pub fn load(checkpoint: &Checkpoint) -> Result<Self, MergeError> {
        let mut tensors = BTreeMap::new();
        for name in checkpoint.tensor_names() {
            let view = checkpoint.tensor(name)?;
            let data = if view.dtype == Dtype::F32 {
                ResidentData::F32(view.to_f32())
            } else {
                ResidentData::Bytes(view.data.to_vec())
            };
            tensors.insert(name.to_string(), ResidentTensor { shape: view.shape.to_vec(), dtype: view.dtype, data });
            checkpoint.release(name);
        }
        Ok(ResidentSource {
            label: checkpoint.label().to_string(),
            config: Some(checkpoint.config().clone()),
            files_dir: Some(checkpoint.dir().to_path_buf()),
            tensors,
        })
    }

    /// Bytes held in memory.
    pub fn resident_bytes(&self) -> usize {
        self.tensors
            .values()
            .map(|t| match &t.data {
                ResidentData::F32(v) => v.len() * 4,
                ResidentData::Bytes(b) => b.len(),
            })
            .sum()
    }
}

impl TensorSource for ResidentSource {
    fn label(&self) -> String {
        self.label.clone()
    }
    fn config(&self) -> Option<&Value> {
        self.config.as_ref()
    }
    fn files_dir(&self) -> Option<&Path> {
        self.files_dir.as_deref()
    }
    fn tensor_names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|t| t.shape.clone())
    }
    fn dtype(&self, name: &str) -> Option<Dtype> {
        self.tensors.get(name).map(|t| t.dtype)
    }
    fn read_f32(&self, name: &str, out: &mut Vec<f32>) -> Result<(), MergeError> {
        let tensor = self.tensors.get(name).ok_or_else(|| MergeError::MissingTensor {
            tensor: name.to_string(),
            model: self.label.clone(),
        })?;
        out.clear();
        match &tensor.data {
            ResidentData::F32(values) => out.extend_from_slice(values),
            ResidentData::Bytes(bytes) if tensor.dtype == Dtype::BF16 => {
                let bf16 = |c: &[u8]| evomerge_checkpoint::bf16_bits_to_f32(u16::from_le_bytes([c[0], c[1]]));
                if bytes.len() / 2 < PARALLEL_DECODE {
                    out.extend(bytes.chunks_exact(2).map(bf16));
                } else {
                    out.par_extend(bytes.par_chunks_exact(2).with_min_len(DECODE_CHUNK).map(bf16));
                }
            }
            ResidentData::Bytes(bytes) => {
                out.resize(tensor.shape.iter().product(), 0.0);
                evomerge_checkpoint::decode_to_f32(tensor.dtype, bytes, out);
            }
        }
        Ok(())
    }
    fn raw(&self, name: &str) -> Option<(Dtype, &[u8])> {
        let tensor = self.tensors.get(name)?;
        match &tensor.data {
            ResidentData::F32(values) => Some((Dtype::F32, bytemuck::cast_slice(values))),
            ResidentData::Bytes(bytes) => Some((tensor.dtype, bytes)),
        }
    }
}
