//! Writing a model directory atomically.
//!
//! The whole tensor list is known up front, so shards and every tensor's byte offset are planned
//! at creation; the shard files are created (sparse, at full size) with their headers already in
//! place inside a hidden temporary sibling directory. Tensors are then written with positioned
//! writes, in any order and from any number of threads. `finish` checks completeness, writes the
//! index, `config.json` and tokenizer files, syncs, and renames the directory into place. If the
//! writer is dropped before that (error, panic), the temporary directory is removed, so a failed
//! merge never leaves anything under the output name.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::Value;

use crate::dtype::{encode_from_f32, Dtype};
use crate::error::CheckpointError;
use crate::hub::{is_processor_file, AUXILIARY_FILES};
use crate::reader::{CONFIG_FILE, INDEX_FILE, SINGLE_FILE};

/// Default maximum shard size: 5 GB, as `transformers`' `save_pretrained` uses.
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// Test hook: when set to a number N, every `write_tensor` after N bytes of tensor data have been
/// written fails with "no space left on device". Lets end-to-end tests exercise the cleanup path
/// of a disk-full error; has no other use.
pub const FAULT_INJECTION_ENV: &str = "EVOMERGE_FAULT_INJECT_WRITE_AFTER_BYTES";

/// Options of [`CheckpointWriter::create`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// A new shard starts when adding the next tensor would exceed this many bytes of tensor
    /// data (a single larger tensor gets a shard of its own).
    pub max_shard_bytes: u64,
    /// Replace an existing output directory (only once the new one is complete).
    pub force: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions { max_shard_bytes: DEFAULT_MAX_SHARD_BYTES, force: false }
    }
}

/// One tensor the writer will receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorPlan {
    pub name: String,
    /// The element type (for a 32-bit integer tensor, [`Dtype::F32`]: the same width).
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// A 32-bit signed integer tensor (written as raw bytes only): an `evomistral` path's layer indices.
    pub int32: bool,
}

impl TensorPlan {
    pub fn new(name: impl Into<String>, dtype: Dtype, shape: Vec<usize>) -> Self {
        TensorPlan { name: name.into(), dtype, shape, int32: false }
    }
    /// A 32-bit signed integer tensor, given to [`CheckpointWriter::write_tensor`] as little-endian bytes.
    pub fn int32(name: impl Into<String>, shape: Vec<usize>) -> Self {
        TensorPlan { name: name.into(), dtype: Dtype::F32, shape, int32: true }
    }
    /// The dtype name in the safetensors header.
    pub fn header_dtype(&self) -> &'static str {
        if self.int32 {
            "I32"
        } else {
            self.dtype.as_str()
        }
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn size_in_bytes(&self) -> usize {
        self.numel() * self.dtype.size_of()
    }
}

struct PlannedTensor {
    plan: TensorPlan,
    shard: usize,
    /// Absolute offset of the tensor's data in its shard file.
    offset: u64,
    bytes: usize,
    written: AtomicBool,
}

struct ShardFile {
    name: String,
    path: PathBuf,
    file: File,
}

/// Writes a model directory; see the module docs. `Sync`: `write_tensor` may be called from many
/// threads at once.
pub struct CheckpointWriter {
    out_dir: PathBuf,
    temp_dir: PathBuf,
    force: bool,
    shards: Vec<ShardFile>,
    tensors: Vec<PlannedTensor>,
    by_name: HashMap<String, usize>,
    bytes_written: AtomicU64,
    fail_after_bytes: Option<u64>,
    finished: bool,
    /// Chat template to write over the copied tokenizer's (see [`CheckpointWriter::set_chat_template`]).
    chat_template: Option<String>,
    /// JSON files written over the copied auxiliary files (see [`CheckpointWriter::set_json_file`]).
    json_files: Vec<(String, Value)>,
}

impl std::fmt::Debug for CheckpointWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointWriter")
            .field("out_dir", &self.out_dir)
            .field("temp_dir", &self.temp_dir)
            .field("shards", &self.shards.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl CheckpointWriter {
    /// Plans the shards for `plan` (in order), creates the temporary directory next to
    /// `out_dir` and every shard file with its header. Refuses an existing `out_dir` unless
    /// `opts.force`.
    pub fn create(out_dir: &Path, plan: Vec<TensorPlan>, opts: WriteOptions) -> Result<Self, CheckpointError> {
        let invalid = |detail: String| CheckpointError::InvalidPlan { detail };
        let dir_name = out_dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| invalid(format!("output path `{}` does not end in a directory name", out_dir.display())))?
            .to_string();
        match std::fs::symlink_metadata(out_dir) {
            Ok(meta) if !opts.force => {
                let _ = meta;
                return Err(CheckpointError::OutputExists { path: out_dir.to_path_buf() });
            }
            Ok(meta) if !meta.is_dir() => {
                return Err(CheckpointError::NotADirectory { path: out_dir.to_path_buf() });
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CheckpointError::io(out_dir, e)),
        }
        if opts.max_shard_bytes == 0 {
            return Err(invalid("max_shard_bytes must be positive".into()));
        }
        if plan.is_empty() {
            return Err(invalid("no tensors to write".into()));
        }
        let mut by_name = HashMap::with_capacity(plan.len());
        for (i, p) in plan.iter().enumerate() {
            if p.name.is_empty() || p.name == "__metadata__" {
                return Err(invalid(format!("`{}` is not a usable tensor name", p.name)));
            }
            if p.shape.iter().try_fold(p.dtype.size_of(), |acc, &d| acc.checked_mul(d)).is_none() {
                return Err(invalid(format!("tensor `{}` shape {:?} is too large", p.name, p.shape)));
            }
            if by_name.insert(p.name.clone(), i).is_some() {
                return Err(invalid(format!("tensor `{}` is planned twice", p.name)));
            }
        }

        let parent = match out_dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| CheckpointError::io(&parent, e))?;
        remove_stale_partials(&parent, &dir_name);
        let temp_dir = parent.join(format!(".{dir_name}.partial-{}-{}", std::process::id(), random_suffix()));
        std::fs::create_dir(&temp_dir).map_err(|e| CheckpointError::io(&temp_dir, e))?;

        let fail_after_bytes = std::env::var(FAULT_INJECTION_ENV).ok().and_then(|v| v.trim().parse().ok());
        // From here on, an early return drops `writer`, which removes the temporary directory.
        let mut writer = CheckpointWriter {
            out_dir: out_dir.to_path_buf(),
            temp_dir,
            force: opts.force,
            shards: Vec::new(),
            tensors: Vec::with_capacity(plan.len()),
            by_name,
            bytes_written: AtomicU64::new(0),
            fail_after_bytes,
            finished: false,
            chat_template: None,
            json_files: Vec::new(),
        };
        writer.lay_out(plan, opts.max_shard_bytes)?;
        Ok(writer)
    }

    /// Assigns tensors to shards in plan order and creates the shard files with their headers.
    fn lay_out(&mut self, plan: Vec<TensorPlan>, max_shard_bytes: u64) -> Result<(), CheckpointError> {
        let mut shard_members: Vec<Vec<usize>> = vec![Vec::new()];
        let mut current = 0u64;
        for (i, p) in plan.iter().enumerate() {
            let size = p.size_in_bytes() as u64;
            let last = shard_members.len() - 1;
            if !shard_members[last].is_empty() && current + size > max_shard_bytes {
                shard_members.push(Vec::new());
                current = 0;
            }
            let last = shard_members.len() - 1;
            shard_members[last].push(i);
            current += size;
        }
        let count = shard_members.len();
        self.tensors = plan
            .into_iter()
            .map(|plan| PlannedTensor { bytes: plan.size_in_bytes(), plan, shard: 0, offset: 0, written: AtomicBool::new(false) })
            .collect();

        for (shard, mut members) in shard_members.into_iter().enumerate() {
            let name = if count == 1 {
                SINGLE_FILE.to_string()
            } else {
                format!("model-{:05}-of-{:05}.safetensors", shard + 1, count)
            };
            // Wider dtypes first keeps every tensor aligned for its element type (as Python's
            // safetensors does), so readers can use aligned slices.
            members.sort_by_key(|&i| std::cmp::Reverse(self.tensors[i].plan.dtype.size_of()));
            let mut data_offsets = Vec::with_capacity(members.len());
            let mut cursor = 0u64;
            for &i in &members {
                let bytes = self.tensors[i].bytes as u64;
                data_offsets.push((i, cursor, cursor + bytes));
                cursor += bytes;
            }
            let header = render_header(&self.tensors, &data_offsets);
            let data_start = 8 + header.len() as u64;
            let path = self.temp_dir.join(&name);
            let mut file = File::create(&path).map_err(|e| CheckpointError::io(&path, e))?;
            file.write_all(&(header.len() as u64).to_le_bytes())
                .and_then(|_| file.write_all(header.as_bytes()))
                .and_then(|_| file.set_len(data_start + cursor))
                .map_err(|e| CheckpointError::io(&path, e))?;
            for (i, begin, _) in data_offsets {
                self.tensors[i].shard = shard;
                self.tensors[i].offset = data_start + begin;
            }
            self.shards.push(ShardFile { name, path, file });
        }
        Ok(())
    }

    /// The hidden directory the model is assembled in (removed or renamed by the end).
    pub fn temp_dir(&self) -> &Path {
        &self.temp_dir
    }

    /// Where the model will be once finished.
    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    /// Number of shard files planned.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The planned tensor of this name.
    pub fn planned(&self, name: &str) -> Option<&TensorPlan> {
        self.by_name.get(name).map(|&i| &self.tensors[i].plan)
    }

    /// Makes every write after `bytes` bytes of tensor data fail as a full disk would. For tests
    /// of the cleanup path only.
    #[doc(hidden)]
    pub fn inject_write_failure_after(&mut self, bytes: u64) {
        self.fail_after_bytes = Some(bytes);
    }

    /// Writes one tensor's raw little-endian bytes (its planned dtype). Each tensor exactly once.
    pub fn write_tensor(&self, name: &str, data: &[u8]) -> Result<(), CheckpointError> {
        let t = self.lookup(name)?;
        if data.len() != t.bytes {
            return Err(wrong_size(t, t.bytes, data.len(), "bytes"));
        }
        self.write_planned(t, data)
    }

    /// Writes one tensor given as f32 values, converting to its planned dtype (f16/bf16 round to
    /// nearest even, as torch does).
    pub fn write_tensor_f32(&self, name: &str, values: &[f32]) -> Result<(), CheckpointError> {
        let t = self.lookup(name)?;
        let numel = t.plan.numel();
        if values.len() != numel {
            return Err(wrong_size(t, numel, values.len(), "values"));
        }
        if t.plan.int32 {
            return Err(CheckpointError::InvalidPlan {
                detail: format!("`{name}` is an integer tensor; write its bytes with write_tensor"),
            });
        }
        #[cfg(target_endian = "little")]
        if t.plan.dtype == Dtype::F32 {
            return self.write_planned(t, bytemuck::cast_slice(values));
        }
        let mut bytes = vec![0u8; t.bytes];
        encode_from_f32(t.plan.dtype, values, &mut bytes);
        self.write_planned(t, &bytes)
    }

    fn lookup(&self, name: &str) -> Result<&PlannedTensor, CheckpointError> {
        self.by_name
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| CheckpointError::UnplannedTensor { tensor: name.to_string() })
    }

    fn write_planned(&self, t: &PlannedTensor, data: &[u8]) -> Result<(), CheckpointError> {
        if t.written.swap(true, Ordering::AcqRel) {
            return Err(CheckpointError::AlreadyWritten { tensor: t.plan.name.clone() });
        }
        let shard = &self.shards[t.shard];
        let before = self.bytes_written.fetch_add(data.len() as u64, Ordering::AcqRel);
        if let Some(limit) = self.fail_after_bytes {
            if before + data.len() as u64 > limit {
                let err = std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    format!("no space left on device (injected by {FAULT_INJECTION_ENV} after {limit} bytes)"),
                );
                return Err(CheckpointError::io(&shard.path, err));
            }
        }
        write_all_at(&shard.file, data, t.offset).map_err(|e| CheckpointError::io(&shard.path, e))
    }

    /// Completes the model: checks every planned tensor was written, writes the shard index (if
    /// sharded) and `config.json`, copies tokenizer/processor files from `files_from`, syncs
    /// everything and renames the directory to the output name (replacing an old one only now,
    /// with `force`). Returns the output directory.
    pub fn finish(self, config: &Value, files_from: Option<&Path>) -> Result<PathBuf, CheckpointError> {
        self.finish_with_processor(config, files_from, files_from)
    }

    /// Write `value` as `name` (a plain file name, e.g. `tokenizer.json`) after the auxiliary files
    /// are copied, replacing a copied file of that name: a merge that builds its own tokenizer.
    pub fn set_json_file(&mut self, name: &str, value: Value) {
        self.json_files.retain(|(n, _)| n != name);
        self.json_files.push((name.to_string(), value));
    }

    /// [`finish`](Self::finish), with the processor files ([`is_processor_file`]: preprocessor and
    /// processor settings, chat templates) copied from `processor_files_from` and the other
    /// auxiliary files (tokenizer, generation settings) from `files_from`. A merged VLM whose
    /// tokenizer comes from another model needs the two apart.
    /// Give the output this chat template instead of the copied tokenizer's: written as
    /// `chat_template.jinja` (where transformers 5 saves and looks first), with any other copy of a
    /// template (`chat_template.json`, `tokenizer_config.json`'s `chat_template`) removed so only
    /// this one is found.
    pub fn set_chat_template(&mut self, template: Option<String>) {
        self.chat_template = template;
    }

    pub fn finish_with_processor(
        mut self,
        config: &Value,
        files_from: Option<&Path>,
        processor_files_from: Option<&Path>,
    ) -> Result<PathBuf, CheckpointError> {
        let missing: Vec<&str> =
            self.tensors.iter().filter(|t| !t.written.load(Ordering::Acquire)).map(|t| t.plan.name.as_str()).collect();
        if let Some(first) = missing.first() {
            return Err(CheckpointError::Incomplete { count: missing.len(), first: first.to_string() });
        }
        if !config.is_object() {
            return Err(CheckpointError::InvalidPlan { detail: "config must be a JSON object".into() });
        }
        for shard in &self.shards {
            shard.file.sync_all().map_err(|e| CheckpointError::io(&shard.path, e))?;
        }
        if self.shards.len() > 1 {
            self.write_index()?;
        }
        write_json(&self.temp_dir.join(CONFIG_FILE), config)?;
        if let Some(source) = files_from {
            copy_auxiliary_files(source, &self.temp_dir, |n| !is_processor_file(n))?;
        }
        if let Some(source) = processor_files_from {
            copy_auxiliary_files(source, &self.temp_dir, is_processor_file)?;
        }
        for (name, value) in &self.json_files {
            write_json(&self.temp_dir.join(name), value)?;
        }
        if let Some(template) = &self.chat_template {
            write_chat_template(&self.temp_dir, template)?;
        }
        sync_dir(&self.temp_dir)?;
        self.move_into_place()?;
        self.finished = true;
        Ok(self.out_dir.clone())
    }

    fn write_index(&self) -> Result<(), CheckpointError> {
        let total: u64 = self.tensors.iter().map(|t| t.bytes as u64).sum();
        let weight_map: serde_json::Map<String, Value> = self
            .tensors
            .iter()
            .map(|t| (t.plan.name.clone(), Value::String(self.shards[t.shard].name.clone())))
            .collect();
        let index = serde_json::json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
        write_json(&self.temp_dir.join(INDEX_FILE), &index)
    }

    fn move_into_place(&self) -> Result<(), CheckpointError> {
        let out = &self.out_dir;
        let exists = std::fs::symlink_metadata(out).is_ok();
        if exists && !self.force {
            return Err(CheckpointError::OutputExists { path: out.clone() });
        }
        if !exists {
            std::fs::rename(&self.temp_dir, out).map_err(|e| CheckpointError::io(out, e))?;
        } else {
            // Swap: old -> backup, new -> out; put the old one back if the second step fails.
            let backup = self.temp_dir.with_file_name(format!(
                ".{}.old-{}-{}",
                out.file_name().and_then(|n| n.to_str()).unwrap_or("model"),
                std::process::id(),
                random_suffix()
            ));
            std::fs::rename(out, &backup).map_err(|e| CheckpointError::io(out, e))?;
            if let Err(e) = std::fs::rename(&self.temp_dir, out) {
                let _ = std::fs::rename(&backup, out);
                return Err(CheckpointError::io(out, e));
            }
            if let Err(e) = std::fs::remove_dir_all(&backup) {
                tracing::warn!(dir = %backup.display(), error = %e, "could not remove the replaced model directory");
            }
        }
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Best effort: make the rename durable.
            let _ = sync_dir(parent);
        }
        Ok(())
    }
}

impl Drop for CheckpointWriter {
    fn drop(&mut self) {
        if !self.finished {
            if let Err(e) = std::fs::remove_dir_all(&self.temp_dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %self.temp_dir.display(), error = %e, "could not remove unfinished output");
                }
            }
        }
    }
}

/// Writes a small model in one call: every tensor as raw little-endian bytes of its dtype. Meant
/// for tests and fixtures; large models should use [`CheckpointWriter`] directly.
pub fn write_checkpoint(
    out_dir: &Path,
    tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)],
    config: &Value,
    files_from: Option<&Path>,
    opts: WriteOptions,
) -> Result<PathBuf, CheckpointError> {
    let plan = tensors.iter().map(|(n, d, s, _)| TensorPlan::new(n.clone(), *d, s.clone())).collect();
    let writer = CheckpointWriter::create(out_dir, plan, opts)?;
    for (name, _, _, data) in tensors {
        writer.write_tensor(name, data)?;
    }
    writer.finish(config, files_from)
}

/// The safetensors header for one shard: `__metadata__` first (format "pt", which transformers
/// checks), then tensors in data order, padded with spaces to a multiple of 8 bytes.
fn render_header(tensors: &[PlannedTensor], data_offsets: &[(usize, u64, u64)]) -> String {
    let mut header = String::from("{\"__metadata__\":{\"format\":\"pt\"}");
    for &(i, begin, end) in data_offsets {
        let plan = &tensors[i].plan;
        let name = serde_json::to_string(&plan.name).unwrap_or_default();
        let shape = plan.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",");
        header.push_str(&format!(
            ",{name}:{{\"dtype\":\"{}\",\"shape\":[{shape}],\"data_offsets\":[{begin},{end}]}}",
            plan.header_dtype()
        ));
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    header
}

fn wrong_size(t: &PlannedTensor, expected: usize, actual: usize, unit: &'static str) -> CheckpointError {
    CheckpointError::WrongTensorSize {
        tensor: t.plan.name.clone(),
        dtype: t.plan.header_dtype().to_string(),
        shape: t.plan.shape.clone(),
        expected,
        actual,
        unit,
    }
}

fn write_json(path: &Path, value: &Value) -> Result<(), CheckpointError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| CheckpointError::io(path, e.into()))?;
    text.push('\n');
    let mut file = File::create(path).map_err(|e| CheckpointError::io(path, e))?;
    file.write_all(text.as_bytes()).and_then(|_| file.sync_all()).map_err(|e| CheckpointError::io(path, e))
}

/// Copies the tokenizer, chat-template, generation and processor files that exist in `source`
/// and pass `keep`.
fn copy_auxiliary_files(source: &Path, dest: &Path, keep: impl Fn(&str) -> bool) -> Result<(), CheckpointError> {
    let entries = std::fs::read_dir(source).map_err(|e| CheckpointError::io(source, e))?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| AUXILIARY_FILES.contains(&n.as_str()) || n.starts_with("chat_template"))
        .filter(|n| keep(n))
        .collect();
    names.sort();
    for name in names {
        let from = source.join(&name);
        if !from.is_file() {
            continue;
        }
        let to = dest.join(&name);
        std::fs::copy(&from, &to).map_err(|e| CheckpointError::io(&from, e))?;
        File::open(&to).and_then(|f| f.sync_all()).map_err(|e| CheckpointError::io(&to, e))?;
    }
    Ok(())
}

fn write_chat_template(dir: &Path, template: &str) -> Result<(), CheckpointError> {
    let json = dir.join("chat_template.json");
    if json.exists() {
        std::fs::remove_file(&json).map_err(|e| CheckpointError::io(&json, e))?;
    }
    let config_path = dir.join("tokenizer_config.json");
    if config_path.is_file() {
        let text = std::fs::read_to_string(&config_path).map_err(|e| CheckpointError::io(&config_path, e))?;
        // A tokenizer config that is not a JSON object is left as it was copied.
        if let Ok(Value::Object(mut config)) = serde_json::from_str::<Value>(&text) {
            if config.remove("chat_template").is_some() {
                write_json(&config_path, &Value::Object(config))?;
            }
        }
    }
    let path = dir.join("chat_template.jinja");
    std::fs::write(&path, template).map_err(|e| CheckpointError::io(&path, e))?;
    File::open(&path).and_then(|f| f.sync_all()).map_err(|e| CheckpointError::io(&path, e))
}

fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    #[cfg(unix)]
    {
        File::open(dir).and_then(|f| f.sync_all()).map_err(|e| CheckpointError::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(unix)]
fn write_all_at(file: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, data, offset)
}

#[cfg(windows)]
fn write_all_at(file: &File, mut data: &[u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !data.is_empty() {
        let n = file.seek_write(data, offset)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        data = &data[n..];
        offset += n as u64;
    }
    Ok(())
}

/// Removes `.<name>.partial-<pid>-*` / `.<name>.old-<pid>-*` directories left by writers that were
/// killed (Drop never ran). Only where a process table exists to tell that `<pid>` is gone (Linux
/// `/proc`); directories of live processes, including concurrent writers, are left alone.
fn remove_stale_partials(parent: &Path, name: &str) {
    let proc_dir = Path::new("/proc");
    if !proc_dir.join("self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let Ok(file_name) = entry.file_name().into_string() else { continue };
        let rest = file_name
            .strip_prefix(&format!(".{name}.partial-"))
            .or_else(|| file_name.strip_prefix(&format!(".{name}.old-")));
        let Some(pid) = rest.and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid == std::process::id() || proc_dir.join(pid.to_string()).exists() {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_dir_all(&path) {
            Ok(()) => tracing::info!(dir = %path.display(), "removed output left by an interrupted earlier run"),
            Err(e) => tracing::warn!(dir = %path.display(), error = %e, "could not remove output left by an interrupted earlier run"),
        }
    }
}

/// Distinct enough to keep concurrent writers (threads or processes) apart.
fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    hasher.write_u128(nanos);
    format!("{:08x}", hasher.finish() as u32)
}
